"""Images per second of the SqueezeNet-shaped model (decode, preprocess, infer) against Pillow +
onnxruntime, what a Python user would write, in the same run.

Both read the same tar archive of JPEG photographs (scikit-learn's two, 640x427, cycled) and
write the top 5 of each image as JSON Lines: sluice with `worker transform` on the archive, one
image per model run on each of --threads threads; Python with Pillow (decode, resize 256 and
centre crop 224, as torchvision does) and onnxruntime in batches of 16 images with `threads`
intra-op threads. Each runs pinned to one core and then to two, --repeat times taking turns; the
fastest run counts.

    .tools/models/bin/python bench/bench_images.py             # 200 images (make bench-images)

Needs `cargo build --release --workspace` first (make bench-images does it).
"""

from __future__ import annotations

import argparse
import io
import sys
import tarfile
import tempfile
from pathlib import Path

from bench import ROOT, SESSION, WORKER, run

# `data` is the archive.
PILLOW_ONNXRUNTIME = SESSION + r'''
import io, json, tarfile
from PIL import Image

labels = open(model.rsplit("/", 1)[0] + "/labels.txt").read().splitlines()
mean = np.array([0.485, 0.456, 0.406], dtype=np.float32)
std = np.array([0.229, 0.224, 0.225], dtype=np.float32)

def preprocess(data):
    image = Image.open(io.BytesIO(data)).convert("RGB")
    w, h = image.size
    size = (256, int(256 * h / w)) if w <= h else (int(256 * w / h), 256)
    image = image.resize(size, Image.BILINEAR)
    left, top = round((size[0] - 224) / 2), round((size[1] - 224) / 2)
    x = np.asarray(image.crop((left, top, left + 224, top + 224)), dtype=np.float32) / 255
    return ((x - mean) / std).transpose(2, 0, 1)

def flush(names, batch, sink):
    (scores,) = session.run(None, {input_name: np.stack(batch)})
    for name, s in zip(names, scores.reshape(len(batch), -1)):
        top = np.argsort(-s)[:5]
        sink.write(json.dumps({"image": name, "predictions": [{"class": labels[i], "probability": float(s[i])} for i in top]}) + "\n")

with tarfile.open(data) as tar, open(out, "w") as sink:
    names, batch = [], []
    for member in tar:
        if not member.isfile():
            continue
        names.append(member.name)
        batch.append(preprocess(tar.extractfile(member).read()))
        if len(batch) == 16:
            flush(names, batch, sink)
            names, batch = [], []
    if batch:
        flush(names, batch, sink)
'''


def make_archive(path: Path, images: int) -> None:
    from PIL import Image
    from sklearn.datasets import load_sample_image

    photos = []
    for name in ("china.jpg", "flower.jpg"):
        encoded = io.BytesIO()
        Image.fromarray(load_sample_image(name)).save(encoded, format="JPEG", quality=90)
        photos.append(encoded.getvalue())
    with tarfile.open(path, "w") as tar:
        for i in range(images):
            data = photos[i % len(photos)]
            info = tarfile.TarInfo(f"photos/{i:05d}.jpg")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=3, help="runs of each case; the fastest counts (default 3)")
    args = parser.parse_args()
    if not WORKER.exists():
        sys.exit(f"{WORKER} is missing: run `cargo build --release --workspace` (or `make bench-images`)")
    model = ROOT / "models/repository/squeezenet/1/model.onnx"
    with tempfile.TemporaryDirectory(prefix="sluice-bench-images-") as tmp:
        tmp = Path(tmp)
        archive = tmp / "photos.tar"
        make_archive(archive, args.images)
        print(f"input: {args.images} JPEG photographs (640x427), {archive.stat().st_size / 1e6:.1f} MB\n")
        results = {}
        for cores, threads in (("0", 1), ("0,1", 2)):
            label = f"{threads} core{'s' if threads > 1 else ''}"
            cases = [
                ("sluice", [str(WORKER), "transform", "--model-repository", str(ROOT / "models/repository"),
                            "--model", "squeezenet", "--input", str(archive), "--output", str(tmp / "out.jsonl"),
                            "--threads", str(threads)]),
                ("Pillow + onnxruntime", [sys.executable, "-c", PILLOW_ONNXRUNTIME, str(model), str(archive),
                                          str(tmp / "py.jsonl"), str(threads)]),
            ]
            timings = {name: [] for name, _ in cases}
            for _ in range(max(1, args.repeat)):
                for name, command in cases:
                    timings[name].append(run(command, cores))
            print(f"== {label}")
            print(f"{'':24} {'seconds':>8} {'images/s':>10} {'peak RSS':>10}")
            for name, _ in cases:
                seconds, rss = min(t for t, _ in timings[name]), max(r for _, r in timings[name])
                results[(label, name)] = seconds
                print(f"{name:24} {seconds:8.2f} {args.images / seconds:10.1f} {rss / 2**20:8.1f} MB", flush=True)
            ratio = results[(label, "Pillow + onnxruntime")] / results[(label, "sluice")]
            print(f"  sluice: {ratio:.2f}x the images/s of Pillow + onnxruntime\n", flush=True)


if __name__ == "__main__":
    main()
