"""Objectives: SLIs from the monitor's own rounds, error budgets, burn-rate alerts, reports."""
