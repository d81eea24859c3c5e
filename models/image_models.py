"""The image models, test images and image references of make_models.py.

Image models go straight into the example repository, with their configuration beside them:

  models/repository/squeezenet/1/model.onnx   SqueezeNet 1.1's architecture as the `onnx` package ships it
      (onnx/backend/test/data/light/light_squeezenet.onnx, its weights replaced by constants),
      with seeded random weights written in and a symbolic batch dimension
      input `data_0` float32 [N, 3, 224, 224], output `softmaxout_1` float32 [N, 1000, 1, 1]
  models/repository/squeezenet/1/labels.txt   the 1000 ImageNet classes, "<synset> <first name>", in the
      order of the models' outputs, from timm's wheel (data only; timm is not imported)
  models/repository/digits/1/model.onnx   an MLP (one hidden layer of 64) trained on scikit-learn's digits
      (8x8 grey images), its first layer a Flatten of the image
      input `image` float32 [N, 1, 8, 8], output `logits` float32 [N, 10]
  examples/data/digits/*.png     held-out digits as 8x8 grey PNGs, named <index>-<true label>
  examples/data/digits.tar.gz    100 held-out digits in one archive
  tests/data/images/     scikit-learn's two photographs (load_sample_image) as JPEG, PNG, WebP,
      one JPEG stored sideways with an EXIF orientation, and bad files
  models/reference/images.json   onnxruntime's top-5 for the test images, preprocessed with
      Pillow as the model configurations declare (what tests compare sluice with)
"""

import glob
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper
from PIL import Image, ImageOps
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from sklearn.neural_network import MLPClassifier

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODELS = os.path.join(ROOT, "models")
REPOSITORY = os.path.join(MODELS, "repository")
REFERENCE = os.path.join(MODELS, "reference")
DIGITS_DATA = os.path.join(ROOT, "examples", "data", "digits")
TEST_IMAGES = os.path.join(ROOT, "tests", "data", "images")
# timm's wheel carries the ImageNet class list; only its data files are read.
TIMM_WHEEL = "timm==1.0.31"

IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]

SQUEEZENET_CONFIG = {
    "image": {
        "width": 224,
        "height": 224,
        "resize": "shorter_side_then_crop",
        "shorter_side": 256,
        "color": "rgb",
        "layout": "nchw",
        "scale": 1 / 255,
        "mean": IMAGENET_MEAN,
        "std": IMAGENET_STD,
        "labels": "labels.txt",
        "scores": "probabilities",
        "top_k": 5,
    }
}

DIGITS_CONFIG = {
    "image": {
        "width": 8,
        "height": 8,
        "resize": "stretch",
        "color": "gray",
        "layout": "nchw",
        "scale": 1 / 255,
        "labels": [str(d) for d in range(10)],
        "scores": "logits",
        "top_k": 3,
    }
}


# ------------------------------------------------------------ preprocessing


def preprocess(image, config):
    """What sluice does to an image, with Pillow: the reference for its tests."""
    c = config["image"]
    image = ImageOps.exif_transpose(image)
    image = image.convert({"rgb": "RGB", "bgr": "RGB", "gray": "L"}[c["color"]])
    width, height = c["width"], c["height"]
    if c["resize"] == "stretch":
        if image.size != (width, height):
            image = image.resize((width, height), Image.BILINEAR)
    else:
        # torchvision's Resize(shorter_side) then CenterCrop((height, width)).
        w, h = image.size
        short = c["shorter_side"]
        if w <= h:
            size = (short, int(short * h / w))
        else:
            size = (int(short * w / h), short)
        if size != image.size:
            image = image.resize(size, Image.BILINEAR)
        w, h = image.size
        left = int(round((w - width) / 2.0))
        top = int(round((h - height) / 2.0))
        image = image.crop((left, top, left + width, top + height))
    x = np.asarray(image, dtype=np.float32)
    if x.ndim == 2:
        x = x[:, :, None]
    if c["color"] == "bgr":
        x = x[:, :, ::-1]
    x = x * np.float32(c.get("scale", 1 / 255))
    x = (x - np.float32(c.get("mean", [0.0]))) / np.float32(c.get("std", [1.0]))
    if c["layout"] == "nchw":
        x = x.transpose(2, 0, 1)
    return np.ascontiguousarray(x[None], dtype=np.float32)


def top_k(scores, labels, k, logits):
    scores = scores.astype(np.float64).ravel()
    if logits:
        scores = np.exp(scores - scores.max())
        scores /= scores.sum()
    order = sorted(range(len(scores)), key=lambda i: (-scores[i], i))[:k]
    return [{"class": labels[i], "probability": float(np.float32(scores[i]))} for i in order]


# --------------------------------------------------------------- SqueezeNet


def imagenet_labels():
    """"<synset> <first name>" for the 1000 ImageNet classes, in the usual (sorted synset) order."""
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--disable-pip-version-check",
             "--dest", tmp, TIMM_WHEEL],
            check=True,
        )
        with zipfile.ZipFile(glob.glob(os.path.join(tmp, "*.whl"))[0]) as wheel:
            synsets = wheel.read("timm/data/_info/imagenet_synsets.txt").decode().split()
            lemmas = dict(
                line.split("\t", 1)
                for line in wheel.read("timm/data/_info/imagenet_synset_to_lemma.txt").decode().splitlines()
            )
    assert len(synsets) == 1000 and synsets == sorted(synsets), len(synsets)
    return [f"{s} {lemmas[s].split(',')[0].strip()}" for s in synsets]


def squeezenet_model():
    """SqueezeNet 1.1 from the onnx package's test data, with seeded random weights."""
    source = os.path.join(os.path.dirname(onnx.__file__), "backend", "test", "data", "light",
                          "light_squeezenet.onnx")
    model = onnx.load(source)
    graph = model.graph
    rng = np.random.default_rng(20261202)
    shapes = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    weights = []
    for node in [n for n in graph.node if n.op_type == "ConstantOfShape"]:
        name = node.output[0]
        shape = tuple(int(d) for d in shapes[node.input[0]])
        if len(shape) == 4:
            # He initialisation keeps activations at a steady scale through the ReLUs; the
            # last convolution's larger weights spread the classes' probabilities apart.
            fan_in = shape[1] * shape[2] * shape[3]
            gain = 6.0 if name.startswith("conv10") else 1.0
            values = rng.normal(0.0, gain * np.sqrt(2.0 / fan_in), shape)
        else:
            values = rng.normal(0.0, 0.01, shape)
        weights.append(numpy_helper.from_array(values.astype(np.float32), name))
    nodes = [n for n in graph.node if n.op_type != "ConstantOfShape"]
    del graph.node[:]
    graph.node.extend(nodes)
    kept = [t for t in graph.initializer if not t.name.endswith("__SHAPE")]
    for t in kept:  # the few weights the file does carry are random too
        values = rng.normal(0.0, 0.01, tuple(t.dims)).astype(np.float32)
        weights.append(numpy_helper.from_array(values, t.name))
    del graph.initializer[:]
    graph.initializer.extend(weights)
    initializers = {t.name for t in graph.initializer} | set(shapes)
    data_inputs = [i for i in graph.input if i.name not in initializers]
    del graph.input[:]
    graph.input.extend(data_inputs)
    for value in list(graph.input) + list(graph.output):
        value.type.tensor_type.shape.dim[0].dim_param = "N"
    del graph.value_info[:]
    # IR 3 wants every initializer listed as an input too; IR 8 does not.
    model.ir_version = 8
    model.producer_name = "sluice make_models.py"
    path = save_to_repository(model, "squeezenet", SQUEEZENET_CONFIG)
    print(f"  ({sum(np.prod(t.dims) for t in graph.initializer)} weights)")
    folder = os.path.dirname(path)
    labels = imagenet_labels()
    with open(os.path.join(folder, "labels.txt"), "w") as f:
        f.write("\n".join(labels) + "\n")
    return path, labels


# ------------------------------------------------------------------- digits


def digits_model():
    """An MLP on scikit-learn's digits, taking the 8x8 image itself."""
    digits = load_digits()
    # The pixels as a grey PNG stores them (0..16 scaled to 0..255), read back as sluice reads
    # them (/255): training sees exactly what inference will.
    pixels = np.round(digits.images * (255.0 / 16.0)).astype(np.uint8)
    x = pixels.reshape(len(pixels), -1).astype(np.float32) / 255.0
    indices = np.arange(len(x))
    train, test = train_test_split(indices, test_size=0.25, random_state=0, stratify=digits.target)
    mlp = MLPClassifier(hidden_layer_sizes=(64,), max_iter=2000, random_state=0)
    mlp.fit(x[train], digits.target[train])
    accuracy = mlp.score(x[test], digits.target[test])
    print(f"  digits MLP: held-out accuracy {accuracy:.3f} on {len(test)} images")
    assert accuracy > 0.95, accuracy

    w1, w2 = (w.astype(np.float32) for w in mlp.coefs_)
    b1, b2 = (b.astype(np.float32) for b in mlp.intercepts_)
    graph = helper.make_graph(
        [
            helper.make_node("Flatten", ["image"], ["flat"], axis=1),
            helper.make_node("Gemm", ["flat", "w1", "b1"], ["hidden_in"]),
            helper.make_node("Relu", ["hidden_in"], ["hidden"]),
            helper.make_node("Gemm", ["hidden", "w2", "b2"], ["logits"]),
        ],
        "digits_mlp",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 1, 8, 8])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 10])],
        [numpy_helper.from_array(a, n) for a, n in [(w1, "w1"), (b1, "b1"), (w2, "w2"), (b2, "b2")]],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)],
                              producer_name="sluice make_models.py")
    model.ir_version = 8
    path = save_to_repository(model, "digits", DIGITS_CONFIG)

    # Held-out examples: a dozen loose PNGs, and an archive of 100.
    shutil.rmtree(DIGITS_DATA, ignore_errors=True)
    os.makedirs(DIGITS_DATA)
    for i in test[:12]:
        Image.fromarray(pixels[i], "L").save(os.path.join(DIGITS_DATA, f"{i:04d}-{digits.target[i]}.png"))
    archive = os.path.join(ROOT, "examples", "data", "digits.tar.gz")
    with open(archive, "wb") as raw:
        # mtime 0 and sorted, fixed metadata: the archive is the same bytes on every run.
        import gzip
        with gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as gz, tarfile.open(fileobj=gz, mode="w") as tar:
            for i in test[12:112]:
                png = io.BytesIO()
                Image.fromarray(pixels[i], "L").save(png, format="PNG")
                info = tarfile.TarInfo(f"digits/{i:04d}-{digits.target[i]}.png")
                info.size, info.mtime, info.mode = len(png.getvalue()), 0, 0o644
                tar.addfile(info, io.BytesIO(png.getvalue()))
    print(f"  wrote examples/data/digits/ (12 PNGs) and examples/data/digits.tar.gz (100)")
    return path


def save_to_repository(model, name, config):
    """Checks `model` and writes it as version 1 of `name`, its configuration beside it."""
    onnx.checker.check_model(model, full_check=True)
    folder = os.path.join(REPOSITORY, name, "1")
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, "model.onnx")
    with open(path, "wb") as f:
        f.write(model.SerializeToString())
    with open(path + ".json", "w") as f:
        f.write(json.dumps(config, indent=2) + "\n")
    print(f"  wrote {os.path.relpath(path, ROOT)} ({os.path.getsize(path)} bytes) and its configuration")
    return path


# ------------------------------------------------------------- test images


def test_images():
    """scikit-learn's photographs in the formats sluice decodes, and files it must refuse."""
    from sklearn.datasets import load_sample_image

    shutil.rmtree(TEST_IMAGES, ignore_errors=True)
    os.makedirs(TEST_IMAGES)
    china = Image.fromarray(load_sample_image("china.jpg"))
    flower = Image.fromarray(load_sample_image("flower.jpg"))
    files = {
        "china.jpg": lambda p: china.save(p, quality=90),
        "flower.png": lambda p: flower.save(p),
        "flower.webp": lambda p: flower.save(p, lossless=True),
        # Stored rotated a quarter turn clockwise, with the EXIF orientation (6) that turns it
        # back: decoders that honour it see the photograph upright.
        "china-exif-rotated.jpg": lambda p: china.transpose(Image.Transpose.ROTATE_90).save(
            p, quality=90, exif=exif_orientation(6)),
        "small-grey.png": lambda p: china.convert("L").resize((100, 67), Image.BILINEAR).save(p),
    }
    for name, write in files.items():
        write(os.path.join(TEST_IMAGES, name))
    jpeg = open(os.path.join(TEST_IMAGES, "china.jpg"), "rb").read()
    with open(os.path.join(TEST_IMAGES, "truncated.jpg"), "wb") as f:
        f.write(jpeg[: len(jpeg) // 3])
    with open(os.path.join(TEST_IMAGES, "not-an-image.jpg"), "wb") as f:
        f.write(b"id,value\n1,2\n")
    # A GIF: a real image in a format sluice does not read.
    china.resize((64, 43)).save(os.path.join(TEST_IMAGES, "unsupported.gif"))
    for name in sorted(os.listdir(TEST_IMAGES)):
        print(f"  tests/data/images/{name} ({os.path.getsize(os.path.join(TEST_IMAGES, name))} bytes)")


def exif_orientation(value):
    exif = Image.Exif()
    exif[0x0112] = value
    return exif


def image_references(squeezenet_path, labels, digits_path):
    """onnxruntime's top-k for every test image (SqueezeNet) and every example digit."""
    references = {"squeezenet": {}, "digits": {}}
    sess = ort.InferenceSession(squeezenet_path, providers=["CPUExecutionProvider"])
    for name in ["china.jpg", "flower.png", "flower.webp", "china-exif-rotated.jpg", "small-grey.png"]:
        x = preprocess(Image.open(os.path.join(TEST_IMAGES, name)), SQUEEZENET_CONFIG)
        (scores,) = sess.run(None, {"data_0": x})
        references["squeezenet"][name] = top_k(scores, labels, 5, logits=False)
    sess = ort.InferenceSession(digits_path, providers=["CPUExecutionProvider"])
    digit_labels = DIGITS_CONFIG["image"]["labels"]
    correct = 0
    for path in sorted(glob.glob(os.path.join(DIGITS_DATA, "*.png"))):
        x = preprocess(Image.open(path), DIGITS_CONFIG)
        (scores,) = sess.run(None, {"image": x})
        predictions = top_k(scores, digit_labels, 3, logits=True)
        name = os.path.basename(path)
        correct += predictions[0]["class"] == name.split("-")[1].split(".")[0]
        references["digits"][name] = predictions
    print(f"  example digits: {correct} of {len(references['digits'])} classified right")
    path = os.path.join(REFERENCE, "images.json")
    with open(path, "w") as f:
        f.write(json.dumps(references, indent=2) + "\n")
    print(f"  wrote {os.path.relpath(path, ROOT)}")
    top = references["squeezenet"]["china.jpg"][0]
    print(f"  squeezenet on china.jpg: {top['class']} {top['probability']:.4f}")


def make_image_models():
    print("image models:")
    squeezenet_path, labels = squeezenet_model()
    digits_path = digits_model()
    test_images()
    image_references(squeezenet_path, labels, digits_path)
