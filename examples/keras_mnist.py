"""The classic Keras MNIST CNN program (the one docs/tutorial.md walks through), as written, with `from lepton_nn import keras` in place of tf.keras.

    LEPTON_NN_DATA=/path/to/mnist python examples/keras_mnist.py

(Without LEPTON_NN_DATA, load_data() uses ~/.cache/lepton_nn/mnist or downloads the files.)
"""
from lepton_nn import keras

model = keras.Sequential([
    keras.layers.Conv2D(32, (3, 3), activation='relu', input_shape=(28, 28, 1)),
    keras.layers.MaxPooling2D((2, 2)),
    keras.layers.Flatten(),
    keras.layers.Dense(128, activation='relu'),
    keras.layers.Dense(10, activation='softmax')])
model.compile(optimizer='adam', loss='sparse_categorical_crossentropy', metrics=['accuracy'])
(x_train, y_train), (x_test, y_test) = keras.datasets.mnist.load_data()
x_train = x_train.reshape(-1, 28, 28, 1).astype('float32') / 255.0
x_test = x_test.reshape(-1, 28, 28, 1).astype('float32') / 255.0
model.fit(x_train, y_train, epochs=5, batch_size=64)
model.evaluate(x_test, y_test)
