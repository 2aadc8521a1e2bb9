"""From run records to conclusions: the tidy table, statistics, figures, tables and the
HTML report. Torch-free."""
