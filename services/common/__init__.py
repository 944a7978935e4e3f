"""What every platformQ HTTP service shares: auth and tenancy, problem+json errors,
rate limits, audit records, JSON logs with correlation ids, health and metrics."""
