"""Modified-backward methods on the hook-free engine of :mod:`pellucid.explain.deeplift`: a
``TorchFunctionMode`` replaces every ReLU call of a pass by an autograd function whose backward
is the method's rule (Guided Backprop, Deconvnet), so functional, reused and in-place ReLUs get
it too and no module hook is ever registered."""
