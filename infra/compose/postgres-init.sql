-- One database per consumer on the shared Postgres (services: the API keys of `platformq serve` on several hosts,
-- PLATFORMQ_API_KEY_STORE_URL in production.env.example).
CREATE DATABASE dagster;
CREATE DATABASE iceberg_catalog;
CREATE DATABASE feast;
CREATE DATABASE mlflow;
CREATE DATABASE marquez;
CREATE DATABASE services;
