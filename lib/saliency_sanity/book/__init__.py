"""The paper's machinery: run profiles, chapter set-up, the experiments over every model, the
scorecard, shared figures and the incremental reproduction of the book.
"""
