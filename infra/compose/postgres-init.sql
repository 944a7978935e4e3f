-- One database per consumer on the shared Postgres.
CREATE DATABASE dagster;
CREATE DATABASE iceberg_catalog;
CREATE DATABASE feast;
CREATE DATABASE mlflow;
CREATE DATABASE marquez;
