"""Training the book's models: the seeded, resumable loop, its losses, and the mitigations of
instability across retraining seeds.
"""
