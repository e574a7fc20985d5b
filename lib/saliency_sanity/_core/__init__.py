"""What every layer needs: input validation, the guard that restores the user's model, devices,
keyed random draws and the on-disk cache.
"""
