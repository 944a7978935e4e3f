-- OHLCV bars per instrument at two intervals: '1m' (minute) and '1d' (the session).
with trades as (
    select * from {{ ref('trades') }}
    where {{ partition_filter() }}
),
bucketed as (
    select '1m' as bar_interval, date_trunc('minute', ts) as bar_start, * from trades
    union all
    select '1d' as bar_interval, date_trunc('day', ts) as bar_start, * from trades
),
ordered as (
    select
        *,
        row_number() over (partition by bar_interval, instrument, bar_start order by ts, trade_id) as rn_first,
        row_number() over (partition by bar_interval, instrument, bar_start order by ts desc, trade_id desc) as rn_last
    from bucketed
)
select
    instrument,
    bar_interval,
    bar_start,
    partition_date,
    max(case when rn_first = 1 then price end) as open,
    max(price) as high,
    min(price) as low,
    max(case when rn_last = 1 then price end) as close,
    sum(quantity) as volume,
    sum(notional) / sum(quantity) as vwap,
    count(*) as trade_count
from ordered
group by instrument, bar_interval, bar_start, partition_date
