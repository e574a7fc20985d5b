"""What each chapter computes from its tables: the values it glues, the tables it shows, its figures.

One module per chapter, so a notebook keeps only its parameters, calls and prose (issue #18).
"""
