"""Training loops: the classifiers' fit and the U-Net's fit."""
