{# Engine-portable helpers (DuckDB locally, Trino in production). #}

{% macro partition_filter(column='partition_date') -%}
    {{ column }} = date '{{ var("partition_date") }}'
{%- endmacro %}

{# Pre-hook of the incremental (Trino) build: empty the run's partition first. delete+insert deletes only the
   partitions its new rows name, so a day rebuilt with no rows would keep the previous build's rows. #}
{% macro clear_partition() -%}
    {%- if is_incremental() -%}
        delete from {{ this }} where {{ partition_filter() }}
    {%- endif -%}
{%- endmacro %}

{# The salt of PII tokens: PLATFORMQ_PII_SALT (each deployment's secret, passed through the environment so it
   never appears on dbt's command line), else the `pii_salt` var, a public literal fit for local data only. #}
{% macro pii_salt() -%}
    {%- set salt = env_var('PLATFORMQ_PII_SALT', '') or var('pii_salt') -%}
    {{- salt | replace("'", "''") -}}
{%- endmacro %}

{# One person, one token: case and surrounding space do not make another email. #}
{% macro normalised_email(expr) -%}
    lower(trim({{ expr }}))
{%- endmacro %}

{% macro tokenise(expr) -%}
    {%- if target.type == 'trino' -%}
        lower(to_hex(sha256(to_utf8('{{ pii_salt() }}' || {{ normalised_email(expr) }}))))
    {%- else -%}
        sha256('{{ pii_salt() }}' || {{ normalised_email(expr) }})
    {%- endif -%}
{%- endmacro %}

{% macro ticks_to_price(expr) -%}
    cast({{ expr }} as double) / 100.0
{%- endmacro %}
