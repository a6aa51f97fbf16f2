"""Airflow's own UI, in a real browser, against a real Airflow web server and the simulator."""
