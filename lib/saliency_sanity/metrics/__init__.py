"""Numbers computed from maps and tables: similarities and their nulls, complexity, soundness,
stability across seeds, and the statistics (bootstrap, paired tests) behind every interval.
"""
