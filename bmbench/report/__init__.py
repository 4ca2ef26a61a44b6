"""`bmbench report`: markdown tables, seaborn figures and the paper's findings, from the results store alone.

load (find runs, group them by device and dtype) → tables, figures, claims (one check per finding) → render.
This package reads tables; it never imports the models.
"""
