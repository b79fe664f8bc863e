// Gradient checkpointing for libtorch's C++ API, which has no torch.utils.checkpoint: a custom
// autograd function that runs a block's forward without recording its graph, keeps only the
// block's input, and in the backward pass runs the block again with gradients enabled to
// differentiate it (PyTorch's reentrant checkpoint, for one tensor in and one out).
#pragma once

#include <ATen/ATen.h>

#include <functional>

namespace tdpo::models {

// block(x) with the activations inside the block freed after the forward pass. `params` are the
// tensors the block reads that may need gradients (the block's weights): autograd sees them as
// inputs of the recomputed block, so their gradients reach the optimizer as without it. The block
// must compute the same function when run again (no dropout, no cache), and must hold everything
// else it reads by value: it runs again after the caller has returned.
at::Tensor recompute_in_backward(std::function<at::Tensor(const at::Tensor&)> block, const at::Tensor& x,
                                 at::TensorList params);

}  // namespace tdpo::models
