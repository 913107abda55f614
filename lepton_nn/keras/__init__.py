"""A Keras-style API on lepton_nn: `from lepton_nn import keras` and write Keras programs.

    model = keras.Sequential([
        keras.layers.Conv2D(32, (3, 3), activation='relu', input_shape=(28, 28, 1)),
        keras.layers.MaxPooling2D((2, 2)),
        keras.layers.Flatten(),
        keras.layers.Dense(128, activation='relu'),
        keras.layers.Dense(10, activation='softmax')])
    model.compile(optimizer='adam', loss='sparse_categorical_crossentropy', metrics=['accuracy'])
    model.fit(x_train, y_train, epochs=5, batch_size=64)

Layers are thin channels-last wrappers over lepton_nn.nn (layers.py); a Model (Sequential, or
the functional keras.Model(inputs, outputs) of functional.py's graph) does compile, fit,
evaluate, predict, summary and save (models.py; the two kinds in sequential.py and
functional_model.py); the .lnn file format is in saving.py.
Walkthrough: docs/tutorial.md; functional models, nesting and freezing: docs/keras_functional.md.
"""
from lepton_nn.keras import callbacks, datasets, layers, losses, models, optimizers, utils
from lepton_nn.keras.functional import KerasTensor
from lepton_nn.keras.layers import Input
from lepton_nn.keras.models import Model, Sequential, load_model

__all__ = ["Model", "Sequential", "Input", "KerasTensor", "layers", "models", "datasets", "optimizers", "losses",
           "callbacks", "utils", "load_model"]
