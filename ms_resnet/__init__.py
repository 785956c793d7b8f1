"""ms_resnet: ResNet image classifiers on MNIST-family, CIFAR-10, SVHN and STL-10 with MindSpore."""

import os

# MindSpore logs WARNING lines by default; keep the console for our own output unless the user
# asks for more with GLOG_v.
os.environ.setdefault("GLOG_v", "3")

__version__ = "0.1.0"
