"""The ingest job: plan on the driver, work per partition on executors."""
