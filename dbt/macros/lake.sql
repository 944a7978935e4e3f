{# Engine-portable helpers (DuckDB locally, Trino in production). #}

{% macro partition_filter(column='partition_date') -%}
    {{ column }} = date '{{ var("partition_date") }}'
{%- endmacro %}

{% macro tokenise(expr) -%}
    {%- if target.type == 'trino' -%}
        lower(to_hex(sha256(to_utf8('{{ var("pii_salt") }}' || lower({{ expr }})))))
    {%- else -%}
        sha256('{{ var("pii_salt") }}' || lower({{ expr }}))
    {%- endif -%}
{%- endmacro %}

{% macro ticks_to_price(expr) -%}
    cast({{ expr }} as double) / 100.0
{%- endmacro %}
