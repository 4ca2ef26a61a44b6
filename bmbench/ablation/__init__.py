"""Ablation suites: the strict suite loader (suite, fields), a cell and its id (cell), which cells run (plan), the
suite's dataset (dataset), one cell measured for real (measure), where cells are executed (executors), the tables of
finished cells (summary), and the resumable driver (driver)."""
