-- Daily ranking of traders by PnL within their tenant, with masked identities only. The leaderboard is per
-- tenant (copy trading is within one): a platform-wide rank would tell a tenant, by its gaps, how many
-- other tenants' traders did better.
with per_account as (
    select
        account_id,
        partition_date,
        -- rounded as positions_pnl's own PnL is: summed over instruments in float dollars, $0.10 + $0.20 made
        -- 0.30000000000000004, ranked above an equal $0.30 (and paid by the DAO, which takes the best PnL)
        round(sum(pnl), 6) as pnl,
        round(sum(traded_notional), 6) as traded_notional,
        sum(fill_count) as fill_count,
        count(distinct instrument) as instruments_traded
    from {{ ref('positions_pnl') }}
    where {{ partition_filter() }}
    group by account_id, partition_date
)
select
    rank() over (partition by acc.tenant_id order by a.pnl desc) as pnl_rank,
    a.account_id,
    a.partition_date,
    acc.tenant_id,
    acc.display_name,
    acc.agent_type,
    a.pnl,
    a.traded_notional,
    case when a.traded_notional > 0 then a.pnl / a.traded_notional end as return_on_notional,
    a.fill_count,
    a.instruments_traded
from per_account a
left join {{ ref('accounts') }} acc
    on acc.account_id = a.account_id and acc.partition_date = a.partition_date
