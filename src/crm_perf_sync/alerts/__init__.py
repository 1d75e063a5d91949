"""Threshold alerts on KPI values, attainment, pace and scores: rules, states, transitions."""
