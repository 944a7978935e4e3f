-- One row per trade: the buy and sell fills of the venue joined on trade_id.
with fills as (
    select * from {{ source('bronze', 'fills') }}
    where {{ partition_filter() }}
),
buys as (select * from fills where side = 'BUY'),
sells as (select * from fills where side = 'SELL')
select
    b.trade_id,
    b.partition_date,
    b.ts,
    b.instrument,
    b.price_ticks,
    {{ ticks_to_price('b.price_ticks') }} as price,
    b.qty_lots as quantity,
    {{ ticks_to_price('b.price_ticks') }} * b.qty_lots as notional,
    b.account_id as buy_account_id,
    s.account_id as sell_account_id,
    b.order_id as buy_order_id,
    s.order_id as sell_order_id,
    -- the taker's side; null when the two fills do not name one taker and one maker (a missing or contradictory
    -- liquidity), which the not_null test reports: an `else 'SELL'` labelled such trades SELL and the test could
    -- never fail
    case
        when b.liquidity = 'TAKER' and s.liquidity = 'MAKER' then 'BUY'
        when b.liquidity = 'MAKER' and s.liquidity = 'TAKER' then 'SELL'
    end as aggressor_side,
    coalesce(b.anomaly_type, s.anomaly_type) as anomaly_type,
    coalesce(b.anomaly_id, s.anomaly_id) as anomaly_id,
    b._batch_id as source_batch_id
from buys b
join sells s on s.trade_id = b.trade_id
