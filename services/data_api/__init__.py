"""Read API over the lake's gold tables for API consumers."""
