{# Every data test reads the run's partition only. Locally the scratch DuckDB holds that one partition anyway;
   on Trino the tables hold every day, and a test over all of them would re-check every earlier day on each run:
   one bad day would fail (and, for a blocking test, stop) the build of every later one, and be reported against
   the wrong partition. A test's own `where` config narrows further. #}
{% macro default__get_where_subquery(relation) -%}
    {%- set where = config.get('where', '') -%}
    {%- set filtered -%}
        (select * from {{ relation }} where {{ partition_filter() }}{% if where %} and ({{ where }}){% endif %}) dbt_subquery
    {%- endset -%}
    {%- do return(filtered) -%}
{%- endmacro %}
