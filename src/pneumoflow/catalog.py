"""The classifiers the pipeline knows and their torchvision ImageNet weight files.

Free of torch on purpose: the Snakefile reads it at parse time, in every job.
"""

WEIGHTS_URL = "https://download.pytorch.org/models/"
WEIGHT_FILES = {"vgg16": "vgg16-397923af.pth", "resnet101": "resnet101-63fe2227.pth"}
CLASSIFIERS = tuple(WEIGHT_FILES)
