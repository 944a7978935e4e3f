{# The lake's layers are schemas: a model configured with schema 'silver' lands in
   `silver`, not `<target>_silver`, so dbt relations match the Iceberg namespaces. #}
{% macro generate_schema_name(custom_schema_name, node) -%}
    {%- if custom_schema_name is none -%}{{ target.schema }}{%- else -%}{{ custom_schema_name | trim }}{%- endif -%}
{%- endmacro %}
