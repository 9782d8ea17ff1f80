"""Alerting: the engine, monitors, their scheduler, ingestion."""
