-- Per account and instrument for the day: traded quantities, net position change,
-- cash flow and mark-to-market PnL at the session's last reference price.
with fills as (
    select * from {{ source('bronze', 'fills') }}
    where {{ partition_filter() }}
),
closing as (
    select instrument, reference_price as close_price
    from (
        select
            instrument,
            reference_price,
            row_number() over (partition by instrument order by ts desc) as rn
        from {{ source('bronze', 'reference_prices') }}
        where {{ partition_filter() }}
    ) r
    where rn = 1
),
per_position as (
    select
        account_id,
        instrument,
        partition_date,
        sum(case when side = 'BUY' then qty_lots else 0 end) as bought_lots,
        sum(case when side = 'SELL' then qty_lots else 0 end) as sold_lots,
        sum(case when side = 'BUY' then qty_lots else -qty_lots end) as net_lots,
        -- money summed exactly in ticks, then converted once: summing dollar doubles made equal PnL unequal
        {{ ticks_to_price("sum(case when side = 'BUY' then -price_ticks else price_ticks end * qty_lots)") }} as cash_flow,
        {{ ticks_to_price('sum(price_ticks * qty_lots)') }} as traded_notional,
        count(*) as fill_count
    from fills
    where account_id is not null  -- an erased account's fills stay in bronze (and trades), unattributed
    group by account_id, instrument, partition_date
)
select
    p.*,
    acc.tenant_id,
    c.close_price,
    -- a flat position's PnL is its cash flow, mark or not; an open one without a mark has none (and the
    -- blocking not_null test on pnl stops the leaderboard rather than rank a trader on part of his book)
    case when p.net_lots = 0 then p.cash_flow else round(p.cash_flow + p.net_lots * c.close_price, 6) end as pnl
from per_position p
left join closing c on c.instrument = p.instrument
left join {{ ref('accounts') }} acc
    on acc.account_id = p.account_id and acc.partition_date = p.partition_date
