"""Deprecated: the old homes of the names users imported, kept so that existing DAGs still parse.

``utils.storage`` moved to :mod:`airflow_provider_metronome.output.reading` and ``utils.window`` to
:mod:`airflow_provider_metronome.window`; importing either warns once.
"""
