"""Ablation suites: the strict suite loader (suite, fields), cells and their planning (cell), one cell for real
(runner), where cells run (executors), and the resumable driver (run)."""
