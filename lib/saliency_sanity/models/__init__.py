"""Models: the book's small VGG-style CNN and ResNet, torchvision's, and the user's own.
"""
