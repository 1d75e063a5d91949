"""Measures: numbers from outside the CRM, defined in the configuration and entered by people."""
