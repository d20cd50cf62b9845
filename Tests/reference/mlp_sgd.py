"""A NumPy reference for training a dense MLP with plain SGD, independent of Pipemesh's code.

Usage: mlp_sgd.py IN.json OUT.json

The tests train a model on a Pipemesh mesh and check the losses and the final weights against
this script, written from the textbook definitions in float64 with NumPy only.

The model is a stack of dense layers, each activation(x · kernel + bias) with kernel shape
[in, out], bias shape [out] and activation "tanh" or "none". The loss of a mini-batch is the
softmax cross-entropy of the last layer's outputs (logits) against integer class labels,
averaged over the batch, plus (l2 / 2) · Σ ‖kernel‖² over the kernels (not the biases). Each
step computes that loss and its gradient on the whole mini-batch with the weights as they are
before the step (the reported loss is that one), then updates every variable with
w ← w − learning_rate · gradient (the penalty's gradient being l2 · kernel).

With "weights_after", step i (from 0) takes its loss and gradient at the weights as they were
after weights_after[i] steps (0: the initial ones) instead of the newest, and applies the
gradient to the newest: PipeDream-2BW's w(i+1) = w(i) − learning_rate · gradient(w(weights_after[i])).

IN.json:
  {"inputs": {"shape": [N, F], "values": [N·F numbers, row-major]},
   "labels": [N integer classes],
   "layers": [{"kernel": "dense0/kernel", "bias": "dense0/bias", "activation": "tanh"}, ...],
   "variables": {"dense0/kernel": {"shape": [F, U], "values": [...]}, ...},
   "learning_rate": 0.1, "l2": 0.001,
   "steps": [[example indices of step 1], [... of step 2], ...],
   "weights_after": [optional: for each step, 0 up to its index]}

OUT.json:
  {"losses": [the loss of each step, before its update],
   "variables": {name: {"shape": [...], "values": [...]}, ...} after the last step,
   "logits": {"shape": [N, classes], "values": [...]} of all inputs with those variables}
"""

import json
import sys

import numpy as np

ACTIVATIONS = ("tanh", "none")


def tensor(entry, what):
    """A float64 array from {"shape": [...], "values": [...]}."""
    shape = [int(extent) for extent in entry["shape"]]
    values = np.asarray(entry["values"], dtype=np.float64)
    if values.size != int(np.prod(shape, dtype=np.int64)):
        raise ValueError(f"{what}: {values.size} values for shape {shape}")
    return values.reshape(shape)


def encoded(array):
    return {"shape": list(array.shape), "values": array.reshape(-1).tolist()}


def forward(layers, variables, inputs):
    """The outputs of every layer (activations[0] is the input)."""
    activations = [inputs]
    for layer in layers:
        z = activations[-1] @ variables[layer["kernel"]] + variables[layer["bias"]]
        activations.append(np.tanh(z) if layer["activation"] == "tanh" else z)
    return activations


def loss_and_gradients(layers, variables, inputs, labels, l2):
    """The mini-batch loss (mean cross-entropy plus the L2 penalty) and its gradients."""
    activations = forward(layers, variables, inputs)
    logits = activations[-1]
    batch = logits.shape[0]
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_softmax = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    rows = np.arange(batch)
    cross_entropy = -log_softmax[rows, labels].mean()
    penalty = 0.5 * l2 * sum(float(np.sum(variables[layer["kernel"]] ** 2)) for layer in layers)

    # d(mean cross-entropy)/d(logits) = (softmax − one_hot) / batch.
    upstream = np.exp(log_softmax)
    upstream[rows, labels] -= 1
    upstream /= batch
    gradients = {}
    for index in reversed(range(len(layers))):
        layer = layers[index]
        if layer["activation"] == "tanh":
            upstream = upstream * (1 - activations[index + 1] ** 2)
        kernel = variables[layer["kernel"]]
        gradients[layer["kernel"]] = activations[index].T @ upstream + l2 * kernel
        gradients[layer["bias"]] = upstream.sum(axis=0)
        upstream = upstream @ kernel.T
    return cross_entropy + penalty, gradients


def train(spec):
    inputs = tensor(spec["inputs"], "inputs")
    labels = np.asarray(spec["labels"], dtype=np.int64)
    layers = spec["layers"]
    variables = {name: tensor(entry, name) for name, entry in spec["variables"].items()}
    learning_rate = float(spec["learning_rate"])
    l2 = float(spec["l2"])
    if inputs.ndim != 2 or labels.shape != (inputs.shape[0],):
        raise ValueError(f"inputs {inputs.shape} need rank 2 and one label per row, got {labels.shape}")
    features = inputs.shape[1]
    for layer in layers:
        if layer["activation"] not in ACTIVATIONS:
            raise ValueError(f"activation {layer['activation']!r} is not one of {ACTIVATIONS}")
        kernel, bias = variables[layer["kernel"]], variables[layer["bias"]]
        if kernel.ndim != 2 or kernel.shape[0] != features or bias.shape != (kernel.shape[1],):
            raise ValueError(f"{layer} has kernel {kernel.shape} and bias {bias.shape} after {features} features")
        features = kernel.shape[1]
    if labels.min() < 0 or labels.max() >= features:
        raise ValueError(f"labels outside 0..<{features}")

    weights_after = spec.get("weights_after", list(range(len(spec["steps"]))))
    if len(weights_after) != len(spec["steps"]) or any(
        not 0 <= after <= index for index, after in enumerate(weights_after)
    ):
        raise ValueError(f"weights_after {weights_after} needs, for each step, 0 up to its index")
    losses = []
    history = [variables]
    for index, step in enumerate(spec["steps"]):
        batch = np.asarray(step, dtype=np.int64)
        seen = history[weights_after[index]]
        loss, gradients = loss_and_gradients(layers, seen, inputs[batch], labels[batch], l2)
        losses.append(float(loss))
        variables = {name: value - learning_rate * gradients.get(name, 0) for name, value in variables.items()}
        history.append(variables)
    return {
        "losses": losses,
        "variables": {name: encoded(value) for name, value in variables.items()},
        "logits": encoded(forward(layers, variables, inputs)[-1]),
    }


def main(arguments):
    if len(arguments) != 2:
        sys.exit("usage: mlp_sgd.py IN.json OUT.json")
    with open(arguments[0], encoding="utf-8") as file:
        spec = json.load(file)
    with open(arguments[1], "w", encoding="utf-8") as file:
        json.dump(train(spec), file)


if __name__ == "__main__":
    main(sys.argv[1:])
