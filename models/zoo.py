"""The model zoo: tabular models as their users export them, with onnxruntime's answers.

Run from the repository root with the pinned venv of tools/requirements-models.txt (make models,
which calls it; or `.tools/models/bin/python models/zoo.py`). For every model it writes, in
models/zoo/:

  <name>.onnx          the model, exported the way the converter's documentation shows
                       (skl2onnx's to_onnx with its defaults, ZipMap included, unless the name
                       says nozipmap; onnxmltools' convert_xgboost / convert_lightgbm)
  <name>.onnx.json     its sidecar: the feature columns, and `id` passed through
  <name>.csv           held-out rows of the data set it was trained on: id, then the features;
                       an empty cell is a missing value where the model handles them
  <name>.expected.csv  onnxruntime's outputs for those rows: id, then every output's values in
                       the model's output order (labels as text, ZipMap's maps as their values)

and zoo.json, the list of models with their family and converter. The families sluice still
refuses (models taking maps) are in models/zoo/refused/ (model only): a test checks that they
are refused with the reason named. The `column_transformer_*` models take one input per column
(strings, integers, floats) and their CSV has a column of each input's name; the `*_text` models
(scikit-learn's text vectorizers) take one, `text`, and onnxruntime's StringNormalizer in them
needs the en_US.UTF-8 locale (Debian: `locales`, with that line in /etc/locale.gen, then
`locale-gen`). Training is seeded: a re-run reproduces every input and reference output byte for
byte (onnxmltools' files differ only in the names it generates afresh). Training data come from
scikit-learn's bundled data sets, and for the text models from word lists in this script.
"""

import csv
import json
import os
import shutil
import warnings

import lightgbm
import numpy as np
import onnx
import onnxruntime as ort
import xgboost
from onnxmltools import convert_lightgbm, convert_xgboost
from onnxmltools.convert.common.data_types import FloatTensorType as MlFloatTensorType
from skl2onnx import to_onnx
from sklearn.datasets import load_breast_cancer, load_diabetes, load_iris, load_wine
from sklearn.decomposition import PCA
from sklearn.ensemble import (
    ExtraTreesClassifier,
    ExtraTreesRegressor,
    GradientBoostingClassifier,
    GradientBoostingRegressor,
    IsolationForest,
    HistGradientBoostingClassifier,
    HistGradientBoostingRegressor,
    RandomForestClassifier,
    RandomForestRegressor,
)
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LinearRegression, LogisticRegression, Ridge, SGDClassifier
from sklearn.naive_bayes import GaussianNB
from sklearn.neighbors import KNeighborsClassifier
from sklearn.neural_network import MLPRegressor
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import Binarizer, MaxAbsScaler, MinMaxScaler, Normalizer, PolynomialFeatures, StandardScaler
from sklearn.svm import SVC, SVR, LinearSVC
from sklearn.tree import DecisionTreeClassifier, DecisionTreeRegressor

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ZOO = os.path.join(ROOT, "models", "zoo")
TARGET_OPSET = {"": 15, "ai.onnx.ml": 3}
# Held-out rows per model.
ROWS = 120

warnings.filterwarnings("ignore")


def split(data, rows=ROWS, seed=0, dtype=np.float32):
    """Train on most of the data set, keep `rows` rows (at most a third) for the zoo's input."""
    x, y = data
    order = np.random.default_rng(seed).permutation(len(x))
    held = min(rows, len(x) // 3)
    test, train = order[:held], order[held:]
    return x[train].astype(dtype), y[train], x[test].astype(dtype)


def with_missing(x, share=0.1, seed=1):
    """A copy of x with a share of its values missing (NaN)."""
    x = x.copy()
    mask = np.random.default_rng(seed).random(x.shape) < share
    x[mask] = np.nan
    return x


def data(name):
    loaders = {"iris": load_iris, "wine": load_wine, "breast_cancer": load_breast_cancer, "diabetes": load_diabetes}
    d = loaders[name]()
    return d.data, d.target


def named_labels(name):
    d = {"iris": load_iris, "wine": load_wine}[name]()
    return d.data, np.array(d.target_names)[d.target]


def skl(model, x_train, zipmap=True):
    """skl2onnx as its documentation shows: to_onnx with a sample of the input."""
    options = None if zipmap else {id(model): {"zipmap": False}}
    return to_onnx(model, x_train[:1], target_opset=TARGET_OPSET, options=options)


def xgb(model, n_features):
    return convert_xgboost(model, initial_types=[("input", MlFloatTensorType([None, n_features]))], target_opset=15)


def lgbm(model, n_features):
    return convert_lightgbm(
        model, initial_types=[("input", MlFloatTensorType([None, n_features]))], target_opset=15, zipmap=False
    )


def cell(value):
    if isinstance(value, (str, np.str_)):
        return str(value)
    if isinstance(value, (np.integer, int)):
        return str(int(value))
    return repr(float(np.float32(value)))


def flatten(output, rows):
    """One output of onnxruntime as rows of cells (ZipMap's maps by their values, in order)."""
    if isinstance(output, list):
        return [[cell(v) for v in row.values()] for row in output]
    array = np.asarray(output).reshape(rows, -1)
    return [[cell(v) for v in row] for row in array]


def write_expected(name, sess, outputs, ids):
    """onnxruntime's outputs: id, then each output's values, a column each."""
    rows = len(ids)
    cells = [sum(parts, []) for parts in zip(*(flatten(o, rows) for o in outputs))]
    header = ["id"]
    for meta, out in zip(sess.get_outputs(), outputs):
        width = len(flatten(out, rows)[0])
        header += [meta.name] if width == 1 else [f"{meta.name}_{i}" for i in range(width)]
    with open(os.path.join(ZOO, name + ".expected.csv"), "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(header)
        for i, row in zip(ids, cells):
            w.writerow([i, *row])


def write(name, onx, x_test, family, converter, handles_missing=False):
    path = os.path.join(ZOO, name + ".onnx")
    onnx.checker.check_model(onx)
    with open(path, "wb") as f:
        f.write(onx.SerializeToString())
    n_features = x_test.shape[1]
    columns = [f"x{i}" for i in range(n_features)]
    with open(path + ".json", "w") as f:
        json.dump({"features": columns, "passthrough": ["id"]}, f)
        f.write("\n")
    ids = list(range(1, len(x_test) + 1))
    with open(os.path.join(ZOO, name + ".csv"), "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["id", *columns])
        for i, row in zip(ids, x_test):
            w.writerow([i, *("" if np.isnan(v) else repr(float(v)) for v in row)])
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    outputs = sess.run(None, {sess.get_inputs()[0].name: x_test})
    write_expected(name, sess, outputs, ids)
    ops = sorted({n.op_type for n in onx.graph.node})
    print(f"  {name}: {', '.join(ops)}")
    return {"name": name, "family": family, "converter": converter, "operators": ops, "missing": handles_missing}


def write_mixed(name, onx, frame, family):
    """A model of several named inputs, fed from the columns of the same names."""
    path = os.path.join(ZOO, name + ".onnx")
    onnx.checker.check_model(onx)
    with open(path, "wb") as f:
        f.write(onx.SerializeToString())
    with open(path + ".json", "w") as f:
        json.dump({"passthrough": ["id"]}, f)
        f.write("\n")
    ids = list(range(1, len(frame) + 1))
    frame.insert(0, "id", ids)
    frame.to_csv(os.path.join(ZOO, name + ".csv"), index=False, lineterminator="\n")
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    feeds = {}
    for meta in sess.get_inputs():
        column = frame[meta.name].to_numpy().reshape(-1, 1)
        dtype = {"tensor(string)": object, "tensor(float)": np.float32, "tensor(double)": np.float64, "tensor(int64)": np.int64}[meta.type]
        feeds[meta.name] = column.astype(dtype)
    outputs = sess.run(None, feeds)
    cells = [sum(parts, []) for parts in zip(*(flatten(o, len(frame)) for o in outputs))]
    write_expected(name, sess, outputs, ids)
    ops = sorted({n.op_type for n in onx.graph.node})
    print(f"  {name}: {', '.join(ops)}")
    return {"name": name, "family": family, "converter": "skl2onnx", "operators": ops, "missing": False}


def feature_vectorizer_model():
    """Hand-built, as onnxmltools joins inputs: FeatureVectorizer over three float columns, then a
    LinearRegressor."""
    import pandas as pd
    from onnx import TensorProto, helper

    inputs = [
        helper.make_tensor_value_info("a", TensorProto.FLOAT, [None, 1]),
        helper.make_tensor_value_info("b", TensorProto.FLOAT, [None, 1]),
        helper.make_tensor_value_info("c", TensorProto.FLOAT, [None, 1]),
    ]
    nodes = [
        helper.make_node("FeatureVectorizer", ["a", "b", "c"], ["joined"], domain="ai.onnx.ml", inputdimensions=[1, 1, 1]),
        helper.make_node("LinearRegressor", ["joined"], ["y"], domain="ai.onnx.ml", coefficients=[0.5, -2.0, 3.0], intercepts=[1.25]),
    ]
    output = helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 1])
    graph = helper.make_graph(nodes, "feature_vectorizer", inputs, [output])
    opsets = [helper.make_opsetid("", 15), helper.make_opsetid("ai.onnx.ml", 3)]
    onx = helper.make_model(graph, opset_imports=opsets, ir_version=8)
    rng = np.random.default_rng(3)
    frame = pd.DataFrame({
        "a": np.round(rng.normal(size=40), 3).astype(np.float32),
        "b": np.round(rng.normal(size=40), 3).astype(np.float32),
        "c": rng.integers(-5, 6, size=40).astype(np.float32),
    })
    entry = write_mixed("feature_vectorizer_linear", onx, frame, "operators: FeatureVectorizer")
    entry["converter"] = "onnx.helper"
    return entry


def mixed_models():
    """ColumnTransformers over string, integer and float columns: one model input per column."""
    import pandas as pd
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType, Int64TensorType, StringTensorType
    from sklearn.compose import ColumnTransformer
    from sklearn.preprocessing import OneHotEncoder

    wine = load_wine(as_frame=True).frame
    frame = pd.DataFrame(
        {
            "colour": np.where(wine["color_intensity"] > 5, "deep", np.where(wine["color_intensity"] > 3, "medium", "pale")),
            "grade": (wine["proline"] // 400).astype(np.int64),
            "alcohol": wine["alcohol"].astype(np.float32),
        }
    )
    target = wine["target"]
    order = np.random.default_rng(0).permutation(len(frame))
    held, train = order[:60], order[60:]
    types = {
        "colour": StringTensorType([None, 1]),
        "grade": Int64TensorType([None, 1]),
        "alcohol": FloatTensorType([None, 1]),
    }
    written = []
    for name, categorical, unknown in (
        ("column_transformer_strings_numbers", ["colour"], "error"),
        ("column_transformer_int_categories_ignore_unknown", ["colour", "grade"], "ignore"),
    ):
        numeric = ["alcohol"]
        columns = categorical + numeric
        model = make_pipeline(
            ColumnTransformer([("categories", OneHotEncoder(handle_unknown=unknown), categorical), ("numbers", StandardScaler(), numeric)]),
            LogisticRegression(max_iter=2000),
        )
        train_frame = frame.iloc[train][columns].copy()
        if unknown == "ignore":
            # Categories the model never saw: rows of them are held out only.
            train_frame = train_frame[(train_frame["colour"] != "medium") & (train_frame["grade"] != 2)]
        model.fit(train_frame, target.loc[train_frame.index])
        onx = convert_sklearn(model, initial_types=[(c, types[c]) for c in columns], target_opset=TARGET_OPSET)
        written.append(write_mixed(name, onx, frame.iloc[held][columns].reset_index(drop=True), "pipeline: ColumnTransformer"))
    # Ordinal categories (a LabelEncoder in ONNX) before a forest.
    from sklearn.preprocessing import OrdinalEncoder

    columns = ["colour", "grade", "alcohol"]
    model = make_pipeline(
        ColumnTransformer([("categories", OrdinalEncoder(), ["colour"]), ("numbers", "passthrough", ["grade", "alcohol"])]),
        RandomForestClassifier(n_estimators=20, random_state=0),
    ).fit(frame.iloc[train][columns], target.iloc[train])
    onx = convert_sklearn(model, initial_types=[(c, types[c]) for c in columns], target_opset=TARGET_OPSET)
    written.append(feature_vectorizer_model())
    written.append(write_mixed("column_transformer_ordinal_forest", onx, frame.iloc[held][columns].reset_index(drop=True), "pipeline: ColumnTransformer"))
    return written


# Texts for the text pipelines: sentences drawn from each topic's words (nothing downloaded), and
# held-out texts that are hard in other ways too.
TOPICS = {
    "sports": "match goal team players coach season league score win defeat striker keeper final cup stadium fans referee",
    "markets": "stocks bonds shares investors prices rally inflation rates earnings trading futures dividend currency bank profit",
    "weather": "rain storm wind forecast sunny clouds temperature snow frost heatwave humidity thunder showers cold warm",
}
COMMON = "the a of and to in on for with today this week after before new big small very more".split()
HARD_TEXTS = [
    "",
    " ",
    "Goal! The STRIKER scored, and the fans cheered: \"what a match\"",
    "Stocks\tfell;\tbonds rose\t(inflation) — prices, prices, PRICES",
    "Café crème, naïve façade: Météo says rain 🌧️ and snow ❄️ tomorrow",
    "東京の天気は雨です rain 雨 storm",
    "line one about the league\nline two about the cup final",
    "Ünïcödé ÀÉÎÕÜ weather, SUNNY & warm 😎",
]


def text_corpus(count, seed):
    """`count` sentences of 5 to 20 words, each mostly from one topic's words, and their topics."""
    rng = np.random.default_rng(seed)
    names = sorted(TOPICS)
    texts, labels = [], []
    for _ in range(count):
        topic = names[rng.integers(len(names))]
        words = TOPICS[topic].split()
        other = TOPICS[names[rng.integers(len(names))]].split()
        sentence = []
        for _ in range(rng.integers(5, 21)):
            pool = [words, other, COMMON][rng.choice(3, p=[0.6, 0.15, 0.25])]
            word = pool[rng.integers(len(pool))]
            sentence.append(word.capitalize() if rng.random() < 0.1 else word)
        texts.append(" ".join(sentence))
        labels.append(topic)
    return texts, labels


def text_models():
    """scikit-learn's text vectorizers before a classifier, taking one string column `text`."""
    import pandas as pd
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import StringTensorType
    from sklearn.feature_extraction.text import CountVectorizer, TfidfVectorizer
    from sklearn.naive_bayes import MultinomialNB

    train_texts, train_labels = text_corpus(600, seed=0)
    held_texts, _ = text_corpus(60, seed=1)
    long_text = " ".join(text_corpus(200, seed=2)[0])
    held = pd.DataFrame({"text": held_texts + HARD_TEXTS + [" ".join(long_text.split()[:3000])]})
    written = []
    for name, vectorizer, classifier in (
        ("tfidf_logreg_text", TfidfVectorizer(), LogisticRegression(max_iter=2000)),
        ("count_bigrams_naive_bayes_text", CountVectorizer(ngram_range=(1, 2)), MultinomialNB()),
        (
            "tfidf_bigrams_stopwords_sublinear_logreg_text",
            TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, stop_words="english", min_df=2),
            LogisticRegression(C=10.0, max_iter=2000),
        ),
    ):
        model = make_pipeline(vectorizer, classifier).fit(train_texts, train_labels)
        onx = convert_sklearn(
            model, initial_types=[("text", StringTensorType([None, 1]))], target_opset={**TARGET_OPSET, "": 15}
        )
        written.append(write_mixed(name, onx, held.copy(), "pipeline: text vectorizer"))
    return written


def models():
    """(name, family, converter, build) for every model of the zoo; build returns (onnx, x_test)."""

    def classifier(name, estimator, dataset, family, zipmap=True, labels=False, missing=False):
        def build():
            x, y = named_labels(dataset) if labels else data(dataset)
            x_train, y_train, x_test = split((x, y))
            if missing:
                x_train, x_test = with_missing(x_train), with_missing(x_test)
            estimator.fit(x_train, y_train)
            return skl(estimator, x_train, zipmap), x_test

        return name, family, "skl2onnx", build, missing

    def regressor(name, estimator, dataset, family, missing=False):
        def build():
            x_train, y_train, x_test = split(data(dataset))
            if missing:
                x_train, x_test = with_missing(x_train), with_missing(x_test)
            estimator.fit(x_train, y_train)
            return skl(estimator, x_train), x_test

        return name, family, "skl2onnx", build, missing

    def double(name, estimator, dataset, family, zipmap=True):
        """Exported from the data as scikit-learn holds it, float64 (to_onnx with an uncast
        sample): the model takes and computes in double. (A classifier's ZipMap takes no
        doubles, so onnxruntime refuses it: such classifiers are exported without.)"""

        def build():
            x_train, y_train, x_test = split(data(dataset), dtype=np.float64)
            estimator.fit(x_train, y_train)
            return skl(estimator, x_train, zipmap), x_test

        return name, family, "skl2onnx", build, False

    def unsupervised(name, estimator, dataset, family):
        def build():
            x_train, _, x_test = split(data(dataset))
            estimator.fit(x_train)
            return skl(estimator, x_train), x_test

        return name, family, "skl2onnx", build, False

    def boosted(name, estimator, dataset, convert, converter, family, binary_of=None, missing=False):
        def build():
            x, y = data(dataset)
            if binary_of is not None:
                y = (y == binary_of).astype(int)
            x_train, y_train, x_test = split((x, y))
            if missing:
                x_train, x_test = with_missing(x_train), with_missing(x_test)
            estimator.fit(x_train, y_train)
            return convert(estimator, x_train.shape[1]), x_test

        return name, family, converter, build, missing

    seed = {"random_state": 0}
    return [
        # Linear models and their pipelines.
        classifier("logreg_iris", LogisticRegression(max_iter=1000), "iris", "linear"),
        classifier("logreg_binary_nozipmap", LogisticRegression(max_iter=5000), "breast_cancer", "linear", zipmap=False),
        classifier("scaler_logreg_wine", make_pipeline(StandardScaler(), LogisticRegression()), "wine", "pipeline: scaler"),
        classifier(
            "imputer_scaler_logreg_wine",
            make_pipeline(SimpleImputer(), StandardScaler(), LogisticRegression()),
            "wine",
            "pipeline: imputer",
            missing=True,
        ),
        classifier("minmax_logreg_iris_names", make_pipeline(MinMaxScaler(), LogisticRegression()), "iris", "pipeline: scaler", labels=True),
        classifier("normalizer_logreg_iris", make_pipeline(Normalizer(), LogisticRegression()), "iris", "pipeline: normalizer"),
        classifier("pca_logreg_wine", make_pipeline(StandardScaler(), PCA(n_components=5), LogisticRegression()), "wine", "pipeline: PCA"),
        classifier("linear_svc_iris", LinearSVC(max_iter=20000, **seed), "iris", "linear"),
        classifier("sgd_binary", make_pipeline(MaxAbsScaler(), SGDClassifier(**seed)), "breast_cancer", "linear"),
        regressor("linreg_scaler_diabetes", make_pipeline(StandardScaler(), LinearRegression()), "diabetes", "pipeline: scaler"),
        regressor("poly_ridge_diabetes", make_pipeline(PolynomialFeatures(2), Ridge()), "diabetes", "pipeline: polynomial features"),
        regressor(
            "binarizer_ridge_diabetes", make_pipeline(Binarizer(threshold=0.0), Ridge()), "diabetes", "pipeline: binarizer"
        ),
        # Other scikit-learn families.
        classifier("knn_iris", KNeighborsClassifier(), "iris", "neighbours"),
        classifier("gaussian_nb_wine", GaussianNB(), "wine", "naive Bayes"),
        # Support vector machines.
        classifier("svc_rbf_iris_probabilities", make_pipeline(StandardScaler(), SVC(probability=True, random_state=0)), "iris", "SVM", zipmap=False),
        classifier("svc_rbf_wine_decision", make_pipeline(StandardScaler(), SVC()), "wine", "SVM"),
        classifier("svc_linear_binary", make_pipeline(StandardScaler(), SVC(kernel="linear")), "breast_cancer", "SVM"),
        classifier("svc_poly_iris_names", SVC(kernel="poly", degree=3, probability=True, random_state=0), "iris", "SVM", labels=True),
        # Exported from float64 arrays, skl2onnx's default when the data are not cast.
        double("logreg_iris_double", LogisticRegression(max_iter=1000), "iris", "float64", zipmap=False),
        double("scaler_linreg_diabetes_double", make_pipeline(StandardScaler(), LinearRegression()), "diabetes", "float64"),
        # Outlier detection: a label (1 inlier, -1 outlier) and a score.
        unsupervised("isolation_forest_breast_cancer", IsolationForest(n_estimators=50, **seed), "breast_cancer", "outlier detection"),
        regressor("svr_rbf_diabetes", make_pipeline(StandardScaler(), SVR(C=50.0)), "diabetes", "SVM"),
        regressor("svr_linear_diabetes", SVR(kernel="linear", C=100.0), "diabetes", "SVM"),
        regressor("mlp_scaler_diabetes", make_pipeline(StandardScaler(), MLPRegressor(hidden_layer_sizes=(16,), max_iter=2000, **seed)), "diabetes", "neural network"),
        # Trees and forests.
        classifier("tree_iris", DecisionTreeClassifier(max_depth=5, **seed), "iris", "trees"),
        classifier("forest_binary", RandomForestClassifier(n_estimators=30, **seed), "breast_cancer", "trees"),
        classifier("forest_wine_names", RandomForestClassifier(n_estimators=30, **seed), "wine", "trees", labels=True),
        classifier("extra_trees_iris_nozipmap", ExtraTreesClassifier(n_estimators=20, **seed), "iris", "trees", zipmap=False),
        regressor("tree_diabetes", DecisionTreeRegressor(max_depth=6, **seed), "diabetes", "trees"),
        regressor("forest_diabetes", RandomForestRegressor(n_estimators=30, max_depth=8, **seed), "diabetes", "trees"),
        regressor("extra_trees_diabetes", ExtraTreesRegressor(n_estimators=20, max_depth=8, **seed), "diabetes", "trees"),
        # Gradient boosting.
        classifier("gboost_binary", GradientBoostingClassifier(n_estimators=40, **seed), "breast_cancer", "boosting"),
        classifier("gboost_wine", GradientBoostingClassifier(n_estimators=30, **seed), "wine", "boosting"),
        regressor("gboost_diabetes", GradientBoostingRegressor(n_estimators=50, **seed), "diabetes", "boosting"),
        boosted("xgboost_binary", xgboost.XGBClassifier(n_estimators=40, max_depth=4, **seed), "breast_cancer", xgb, "onnxmltools", "XGBoost"),
        boosted("xgboost_wine", xgboost.XGBClassifier(n_estimators=30, max_depth=3, **seed), "wine", xgb, "onnxmltools", "XGBoost"),
        boosted("xgboost_diabetes_missing", xgboost.XGBRegressor(n_estimators=50, max_depth=4, **seed), "diabetes", xgb, "onnxmltools", "XGBoost", missing=True),
        boosted("lightgbm_binary", lightgbm.LGBMClassifier(n_estimators=40, verbose=-1, **seed), "breast_cancer", lgbm, "onnxmltools", "LightGBM"),
        boosted("lightgbm_wine", lightgbm.LGBMClassifier(n_estimators=30, min_child_samples=5, verbose=-1, **seed), "wine", lgbm, "onnxmltools", "LightGBM"),
        boosted("lightgbm_diabetes_missing", lightgbm.LGBMRegressor(n_estimators=50, verbose=-1, **seed), "diabetes", lgbm, "onnxmltools", "LightGBM", missing=True),
    ]


def refused():
    """A model sluice does not run: one that takes maps (DictVectorizer), not tables."""
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import DictionaryType, FloatTensorType, StringTensorType
    from sklearn.feature_extraction import DictVectorizer

    os.makedirs(os.path.join(ZOO, "refused"))
    dicts = DictVectorizer().fit([{"a": 1.0, "b": 2.0}])
    map_input = [("x", DictionaryType(StringTensorType([1]), FloatTensorType([1])))]
    for name, onx in (("dict_vectorizer", convert_sklearn(dicts, initial_types=map_input, target_opset=TARGET_OPSET)),):
        with open(os.path.join(ZOO, "refused", name + ".onnx"), "wb") as f:
            f.write(onx.SerializeToString())
        print(f"  refused/{name}: {', '.join(sorted({n.op_type for n in onx.graph.node}))}")


def node_value(x):
    """A value of a node test in JSON: text as is, numbers as floats, NaN and infinities as the
    strings "NaN", "Infinity" and "-Infinity"."""
    if isinstance(x, bytes):
        return x.decode()
    if isinstance(x, str):
        return x
    if np.isnan(x):
        return "NaN"
    return ("Infinity" if x > 0 else "-Infinity") if np.isinf(x) else float(x)


def node_tests():
    """The ONNX project's own node tests of the operators the engine supplies (the ai.onnx.ml
    ones, the text ones, ReduceLogSumExp, Flatten), as the onnx package ships them: each model with its
    inputs and expected outputs, as JSON."""
    from onnx.backend.test.case.node import collect_testcases

    folder = os.path.join(ZOO, "onnx_node_tests")
    os.makedirs(folder, exist_ok=True)
    names = []
    prefixes = ("test_ai_onnx_ml_", "test_strnormalizer_", "test_tfidfvectorizer_", "test_reduce_log_sum_exp_", "test_flatten_")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cases = [
            c for c in collect_testcases(None) if c.name.startswith(prefixes) and not c.name.endswith("_expanded")
        ]
    for case in cases:
        name = case.name[len("test_ai_onnx_ml_"):] if case.name.startswith("test_ai_onnx_ml_") else case.name[len("test_"):]
        with open(os.path.join(folder, name + ".onnx"), "wb") as f:
            f.write(case.model.SerializeToString())
        inputs, outputs = case.data_sets[0]

        def tensors(values, infos):
            return [
                {"name": info.name, "shape": list(np.asarray(v).shape), "dtype": str(np.asarray(v).dtype),
                 "data": [node_value(x) for x in np.asarray(v).ravel().tolist()]}
                for v, info in zip(values, infos)
            ]

        with open(os.path.join(folder, name + ".json"), "w") as f:
            json.dump({"inputs": tensors(inputs, case.model.graph.input), "outputs": tensors(outputs, case.model.graph.output)}, f)
            f.write("\n")
        names.append(name)
    print(f"  onnx_node_tests: {', '.join(names)}")


def main():
    shutil.rmtree(ZOO, ignore_errors=True)
    os.makedirs(ZOO)
    print(f"model zoo -> {os.path.relpath(ZOO, ROOT)}")
    manifest = []
    for name, family, converter, build, missing in models():
        onx, x_test = build()
        manifest.append(write(name, onx, x_test, family, converter, missing))
    manifest += mixed_models()
    manifest += text_models()
    refused()
    node_tests()
    with open(os.path.join(ZOO, "zoo.json"), "w") as f:
        json.dump(manifest, f, indent=1)
        f.write("\n")
    print(f"  {len(manifest)} models")


if __name__ == "__main__":
    main()
