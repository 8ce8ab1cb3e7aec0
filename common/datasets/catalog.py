"""Datasets by name (the MNIST family, CIFAR-10): labels, published files, download URLs and checksums."""

from __future__ import annotations

from dataclasses import dataclass, field

SPLITS = ("train", "test")


@dataclass(frozen=True)
class DataFile:
    """One published file of a dataset."""

    filename: str
    url: str | None = None
    md5: str | None = None
    sha256: str | None = None
    #: Array name inside an ``.npz`` archive holding several arrays.
    npz_key: str | None = None
    #: A folder (an extracted archive), not a file.
    folder: bool = False


@dataclass(frozen=True)
class Layout:
    """One way a dataset is distributed: a file per (split, part)."""

    #: Keys are ``"<split>_images"`` and ``"<split>_labels"`` (one archive may be all four).
    files: dict[str, DataFile]
    #: How the files are read: "arrays" (an IDX or ``.npz`` file per part) or "cifar" (``common.datasets.cifar``).
    reader: str = "arrays"

    def split_files(self, split: str) -> tuple[DataFile, DataFile]:
        """The (images, labels) files of ``split``."""
        return self.files[f"{split}_images"], self.files[f"{split}_labels"]

    @property
    def downloadable(self) -> bool:
        return all(f.url for f in self.files.values())


@dataclass(frozen=True)
class DatasetSpec:
    """A dataset known by name."""

    name: str
    title: str
    homepage: str
    labels: tuple[str, ...]
    #: Distributions we can read, the downloadable one first.
    layouts: tuple[Layout, ...]
    #: Folders where an operating-system package installs the files.
    system_dirs: tuple[str, ...] = ()
    #: How to get the files without internet access, for error messages.
    install_hint: str = ""
    split_sizes: dict[str, int] = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        return len(self.labels)


def _kana_labels(kana: str, romaji: list[str]) -> tuple[str, ...]:
    """Class names such as "あ (a)": the character, then how it reads."""
    return tuple(f"{k} ({r.replace('-', ' ')})" for k, r in zip(kana, romaji, strict=True))


def _idx_layout(base_url: str, md5: dict[str, str]) -> Layout:
    names = {
        "train_images": "train-images-idx3-ubyte.gz",
        "train_labels": "train-labels-idx1-ubyte.gz",
        "test_images": "t10k-images-idx3-ubyte.gz",
        "test_labels": "t10k-labels-idx1-ubyte.gz",
    }
    return Layout({k: DataFile(n, base_url + n, md5=md5[k]) for k, n in names.items()})


def _npz_layout(base_url: str | None, prefix: str, md5: dict[str, str] | None = None) -> Layout:
    files = {}
    for split in SPLITS:
        for part, suffix in (("images", "imgs"), ("labels", "labels")):
            key = f"{split}_{part}"
            name = f"{prefix}-{split}-{suffix}.npz"
            files[key] = DataFile(name, base_url + name if base_url else None, md5=(md5 or {}).get(key))
    return Layout(files)


def _keras_mnist_npz() -> Layout:
    url = "https://storage.googleapis.com/tensorflow/tf-keras-datasets/mnist.npz"
    sha = "731c5ac602752760c8e48fbffcf8c3b850d9dc2a2aedcf2cc48468fc17b673d1"
    return Layout(
        {
            f"{split}_{part}": DataFile("mnist.npz", url, sha256=sha, npz_key=f"{xy}_{split}")
            for split in SPLITS
            for part, xy in (("images", "x"), ("labels", "y"))
        }
    )


MNIST = DatasetSpec(
    name="mnist",
    title="MNIST handwritten digits",
    homepage="https://yann.lecun.com/exdb/mnist/",
    labels=tuple(str(d) for d in range(10)),
    layouts=(
        _idx_layout(
            "https://storage.googleapis.com/cvdf-datasets/mnist/",
            {
                "train_images": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
                "train_labels": "d53e105ee54ea40749a09fcbcd1e9432",
                "test_images": "9fb629c4189551a2d022fa330f9573f3",
                "test_labels": "ec29112dd5afa0611ce80d1b7f02629c",
            },
        ),
        _keras_mnist_npz(),
    ),
    install_hint="download the four IDX files or Keras' mnist.npz into the data folder",
    split_sizes={"train": 60000, "test": 10000},
)

FASHION_MNIST = DatasetSpec(
    name="fashion_mnist",
    title="Fashion-MNIST (Zalando)",
    homepage="https://github.com/zalandoresearch/fashion-mnist",
    labels=(
        "T-shirt/top",
        "Trouser",
        "Pullover",
        "Dress",
        "Coat",
        "Sandal",
        "Shirt",
        "Sneaker",
        "Bag",
        "Ankle boot",
    ),
    layouts=(
        _idx_layout(
            "https://storage.googleapis.com/tensorflow/tf-keras-datasets/",
            {
                "train_images": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
                "train_labels": "25c81989df183df01b3e8a0aad5dffbe",
                "test_images": "bef4ecab320f06d8554ea6380940ec79",
                "test_labels": "bb300cfdad3c16e7a12a480ee83cd310",
            },
        ),
    ),
    system_dirs=("/usr/share/datasets/fashion-mnist",),
    install_hint="on Debian/Ubuntu: apt-get install dataset-fashion-mnist",
    split_sizes={"train": 60000, "test": 10000},
)

KMNIST = DatasetSpec(
    name="kmnist",
    title="Kuzushiji-MNIST (10 hiragana)",
    homepage="https://github.com/rois-codh/kmnist",
    labels=_kana_labels("おきすつなはまやれを", "o ki su tsu na ha ma ya re wo".split()),
    layouts=(
        _idx_layout(
            "http://codh.rois.ac.jp/kmnist/dataset/kmnist/",
            {
                "train_images": "bdb82020997e1d708af4cf47b453dcf7",
                "train_labels": "e144d726b3acfaa3e44228e80efcd344",
                "test_images": "5c965bf0a639b31b8f53240b1b52f4d7",
                "test_labels": "7320c461ea6c1c855c0b718fb2a4b134",
            },
        ),
        _npz_layout(None, "kmnist"),
    ),
    install_hint="download the KMNIST IDX or .npz files into the data folder",
    split_sizes={"train": 60000, "test": 10000},
)

_K49_ROMAJI = (
    "a i u e o ka ki ku ke ko sa shi su se so ta chi tsu te to na ni nu ne no "
    "ha hi fu he ho ma mi mu me mo ya yu yo ra ri ru re ro wa wi we wo n iteration-mark"
).split()
#: The characters of k49_classmap.csv, in class order.
_K49_KANA = "あいうえおかきくけこさしすせそたちつてとなにぬねのはひふへほまみむめもやゆよらりるれろわゐゑをんゝ"

K49 = DatasetSpec(
    name="k49",
    title="Kuzushiji-49 (49 hiragana)",
    homepage="https://github.com/rois-codh/kmnist",
    labels=_kana_labels(_K49_KANA, _K49_ROMAJI),
    layouts=(
        _npz_layout(
            "http://codh.rois.ac.jp/kmnist/dataset/k49/",
            "k49",
            {
                "train_images": "7ac088b20481cf51dcd01ceaab89d821",
                "train_labels": "44a8e1b893f81e63ff38d73cad420f7a",
                "test_images": "d352e201d846ce6b94f42c990966f374",
                "test_labels": "4da6f7a62e67a832d5eb1bd85c5ee448",
            },
        ),
    ),
    install_hint="download the four k49-*.npz files into the data folder",
    split_sizes={"train": 232365, "test": 38547},
)



def _cifar_layouts(url: str, md5: str) -> tuple[Layout, Layout]:
    """The published archive, and the folder it extracts to (as Keras' own cache holds it)."""
    archive = DataFile(url.rsplit("/", 1)[-1], url, md5=md5)
    folder = DataFile("cifar-10-batches-py", folder=True)
    keys = [f"{split}_{part}" for split in SPLITS for part in ("images", "labels")]
    return Layout(dict.fromkeys(keys, archive), "cifar"), Layout(dict.fromkeys(keys, folder), "cifar")


CIFAR10 = DatasetSpec(
    name="cifar10",
    title="CIFAR-10 (32 x 32 colour photos, 10 classes)",
    homepage="https://www.cs.toronto.edu/~kriz/cifar.html",
    labels=("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"),
    layouts=_cifar_layouts("https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
                           "c58f30108f718f92721af3b95e74349a"),
    install_hint="its extracted cifar-10-batches-py folder",
    split_sizes={"train": 50000, "test": 10000},
)

DATASETS: dict[str, DatasetSpec] = {d.name: d for d in (MNIST, FASHION_MNIST, KMNIST, K49, CIFAR10)}
