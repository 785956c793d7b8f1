"""ms_resnet: ResNet image classifiers on MNIST-family, CIFAR-10, SVHN and STL-10 with MindSpore."""

import os
from pathlib import Path

# MindSpore prints its own log lines (ERROR, and CRITICAL for a failed write) on the console,
# before and around our one-line error. Unless the user set up MindSpore's logging (GLOG_*)
# or runs under msrun (whose failure summary reads the workers' console logs), they go to
# files under $MS_RESNET_CACHE/mindspore_log instead; set GLOG_v (e.g. GLOG_v=2) to see them.
if not any(name.startswith("GLOG_") for name in os.environ) and "MS_WORKER_NUM" not in os.environ:
    _cache = os.environ.get("MS_RESNET_CACHE")
    _logs = (Path(_cache).expanduser() if _cache else Path.home() / ".cache" / "ms_resnet")
    os.environ.update(GLOG_v="3", GLOG_logtostderr="0", GLOG_stderrthreshold="4",
                      GLOG_log_dir=str(_logs / "mindspore_log"))
else:
    os.environ.setdefault("GLOG_v", "3")

__version__ = "0.1.0"
