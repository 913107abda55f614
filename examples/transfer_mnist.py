"""Transfer learning, the classic Keras example, with `from lepton_nn import keras` (docs/transfer.md).

    LEPTON_NN_DATA=/path/to/mnist python examples/transfer_mnist.py

Train the CNN on digits 0–4 and save it; load it, freeze its convolutional features, put a new head
on them and train that on digits 5–9; then unfreeze and fine-tune everything at a tenth of the
learning rate. `lepton-nn transfer` runs the same steps and compares them with training from scratch.
"""
import numpy as np

from lepton_nn import keras

(x_train, y_train), (x_test, y_test) = keras.datasets.mnist.load_data()
x_train = x_train.reshape(-1, 28, 28, 1).astype('float32') / 255.0
x_test = x_test.reshape(-1, 28, 28, 1).astype('float32') / 255.0
low, high = y_train < 5, y_train >= 5            # digits 0–4 to pretrain on, 5–9 to transfer to
low_test, high_test = y_test < 5, y_test >= 5

# 1. Pretrain on 0–4 and save.
model = keras.Sequential([
    keras.Input(shape=(28, 28, 1)),
    keras.layers.Conv2D(32, (3, 3), activation='relu', name='conv'),
    keras.layers.MaxPooling2D((2, 2), name='pool'),
    keras.layers.Flatten(name='flatten'),
    keras.layers.Dense(128, activation='relu', name='dense'),
    keras.layers.Dense(5, activation='softmax', name='head')])
model.compile(optimizer='adam', loss='sparse_categorical_crossentropy', metrics=['accuracy'])
model.fit(x_train[low], y_train[low], epochs=5, batch_size=64)
model.save('digits_0_4.lnn')

# 2. Load it, keep the layers up to 'flatten' as a frozen feature extractor, train a new head on 5–9.
base = keras.models.load_model('digits_0_4.lnn')
while base.layers[-1].name != 'flatten':
    base.pop()
base.trainable = False
inputs = keras.Input(shape=(28, 28, 1))
features = base(inputs, training=False)
hidden = keras.layers.Dense(128, activation='relu')(features)
outputs = keras.layers.Dense(5, activation='softmax')(hidden)
transferred = keras.Model(inputs, outputs)
transferred.compile(optimizer='adam', loss='sparse_categorical_crossentropy', metrics=['accuracy'])
transferred.summary()                            # 320 non-trainable parameters: the conv layer's
frozen = base.get_weights()
transferred.fit(x_train[high], y_train[high] - 5, epochs=2, batch_size=64)
assert all(np.array_equal(a, b) for a, b in zip(frozen, base.get_weights()))  # untouched, bit for bit
print('frozen features + new head:', transferred.evaluate(x_test[high_test], y_test[high_test] - 5))

# 3. Fine-tune everything with a lower learning rate. A change of `trainable` takes effect at compile.
base.trainable = True
transferred.compile(optimizer=keras.optimizers.Adam(1e-4), loss='sparse_categorical_crossentropy',
                    metrics=['accuracy'])
transferred.fit(x_train[high], y_train[high] - 5, epochs=2, batch_size=64)
print('fine-tuned:', transferred.evaluate(x_test[high_test], y_test[high_test] - 5))
print('the pretrained model, on 0–4:', model.evaluate(x_test[low_test], y_test[low_test]))
