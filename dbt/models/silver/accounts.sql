-- Accounts with PII removed: names masked, emails tokenised (salted SHA-256),
-- so joins on the token still work while the raw values stay in bronze only.
select
    account_id,
    partition_date,
    tenant_id,
    tenant_name,
    user_id,
    substr(full_name, 1, 1) || '***' as display_name,
    {{ tokenise('email') }} as email_token,
    split_part({{ normalised_email('email') }}, '@', 2) as email_domain,
    agent_type,
    initial_balance_minor
from {{ source('bronze', 'accounts') }}
where {{ partition_filter() }}
