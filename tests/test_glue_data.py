"""The offline GLUE reader: every task's official TSV layout, the errors for bad files, and submission files."""

import pytest
from conftest import REPO_ROOT, SHARED_DIR

from hydra_transformers.glue import (
    GLUE_TASKS,
    GlueFormatError,
    get_glue_task,
    glue_features,
    load_glue_directory,
    write_glue_submission,
)

GLUE_DATA = SHARED_DIR / "glue_data"

# Snippets in the exact layout of the official files (header rows, column order, label spellings, MRPC's BOM).
OFFICIAL_SNIPPETS = {
    "CoLA": {
        "train.tsv": "gj04\t1\t\tOur friends won't buy this analysis.\nbc01\t0\t*\tThe more does Bill smoke.\n",
        "dev.tsv": "gj04\t0\t*\tThe sailors rode clear of the rocks the breeze.\n",
        "test.tsv": "index\tsentence\n0\tBill whistled past the house.\n7\tThe car honked.\n",
    },
    "SST-2": {
        "train.tsv": "sentence\tlabel\nhide new secretions \t0\na \"charming\" journey \t1\n",
        "dev.tsv": "sentence\tlabel\nunflinchingly bleak \t0\n",
        "test.tsv": "index\tsentence\n0\tuneasy mishmash .\n",
    },
    "MRPC": {
        "train.tsv": "\ufeffQuality\t#1 ID\t#2 ID\t#1 String\t#2 String\n"
                     "1\t702876\t702977\tHe said \" no \" .\tHe said no .\n",
        "dev.tsv": "\ufeffQuality\t#1 ID\t#2 ID\t#1 String\t#2 String\n0\t1\t2\tA cat .\tA dog .\n",
        "test.tsv": "index\t#1 ID\t#2 ID\t#1 String\t#2 String\n3\t1089874\t1089925\tPCCW 's chief .\tMike .\n",
    },
    "QQP": {
        "train.tsv": "id\tqid1\tqid2\tquestion1\tquestion2\tis_duplicate\n"
                     "133273\t213221\t213222\tHow is the life of a math student?\tWhich level of prepration?\t0\n"
                     "402555\t536040\t536041\tHow do I learn to cook?\tWhat is the way to learn cooking?\t1\n",
        "dev.tsv": "id\tqid1\tqid2\tquestion1\tquestion2\tis_duplicate\n"
                   "201359\t303345\t303346\tWhy is the sky blue?\tWhy is grass green?\t0\n",
        "test.tsv": "id\tquestion1\tquestion2\n0\tWhy am I mentally very lonely?\tFind out the meaning of life?\n",
    },
    "MNLI": {
        "train.tsv": "index\tpromptID\tpairID\tgenre\tsentence1_binary_parse\tsentence2_binary_parse\tsentence1_parse\t"
                     "sentence2_parse\tsentence1\tsentence2\tlabel1\tgold_label\n"
                     "0\t31193\t31193n\tgovernment\t( ( Conceptually cream ) )\t( ( Product ) )\t(ROOT (S))\t(ROOT (S))"
                     "\tConceptually cream skimming has two basic dimensions.\tProduct and geography are what make "
                     "cream skimming work.\tneutral\tneutral\n",
        "dev_matched.tsv": "index\tpromptID\tpairID\tgenre\tsentence1_binary_parse\tsentence2_binary_parse\t"
                           "sentence1_parse\tsentence2_parse\tsentence1\tsentence2\tlabel1\tlabel2\tlabel3\tlabel4\t"
                           "label5\tgold_label\n"
                           "0\t63735\t63735n\tslate\t( A )\t( B )\t(ROOT)\t(ROOT)\tThe new rights are nice enough\t"
                           "Everyone really likes the newest benefits\tneutral\tentailment\tneutral\tneutral\tneutral\t"
                           "neutral\n",
        "dev_mismatched.tsv": "index\tpromptID\tpairID\tgenre\tsentence1_binary_parse\tsentence2_binary_parse\t"
                              "sentence1_parse\tsentence2_parse\tsentence1\tsentence2\tlabel1\tlabel2\tlabel3\t"
                              "label4\tlabel5\tgold_label\n"
                              "0\t75290\t75290c\tletters\t( A )\t( B )\t(ROOT)\t(ROOT)\tYour contribution helped.\t"
                              "Your contributions were of no help.\tcontradiction\tcontradiction\tcontradiction\t"
                              "contradiction\tcontradiction\tcontradiction\n",
        "test_matched.tsv": "index\tpromptID\tpairID\tgenre\tsentence1_binary_parse\tsentence2_binary_parse\t"
                            "sentence1_parse\tsentence2_parse\tsentence1\tsentence2\n"
                            "0\t31349\t31349e\tgovernment\t( A )\t( B )\t(ROOT)\t(ROOT)\tHierbas is a name.\tIt is.\n",
        "test_mismatched.tsv": "index\tpromptID\tpairID\tgenre\tsentence1_binary_parse\tsentence2_binary_parse\t"
                               "sentence1_parse\tsentence2_parse\tsentence1\tsentence2\n"
                               "5\t1\t1n\tverbatim\t( A )\t( B )\t(ROOT)\t(ROOT)\tWhat a day.\tIt rained.\n",
    },
    "QNLI": {
        "train.tsv": "index\tquestion\tsentence\tlabel\n0\tWhat came into force after the new constitution?\t"
                     "As of that day, the new constitution heralding the Second Republic came into force.\t"
                     "entailment\n",
        "dev.tsv": "index\tquestion\tsentence\tlabel\n0\tWhat is the name?\tIt is a sentence.\tnot_entailment\n",
        "test.tsv": "index\tquestion\tsentence\n0\tWhat is the name?\tNo name here.\n",
    },
    "STS-B": {
        "train.tsv": "index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore\n"
                     "0\tmain-captions\tMSRvid\t2012test\t0001\tnone\tnone\tA plane is taking off.\tAn air plane is "
                     "taking off.\t5.000\n",
        "dev.tsv": "index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore\n"
                   "0\tmain-captions\tMSRvid\t2012test\t0000\tnone\tnone\tA man dances.\tA man sings.\t0.750\n",
        "test.tsv": "index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\n"
                    "0\tmain-captions\tMSRvid\t2012test\t0024\tnone\tnone\tA girl is styling her hair.\tA girl.\n",
    },
    "RTE": {
        "train.tsv": "index\tsentence1\tsentence2\tlabel\n0\tNo weapons found.\tWeapons found.\tnot_entailment\n",
        "dev.tsv": "index\tsentence1\tsentence2\tlabel\n0\tDana Reeve died.\tDana Reeve is dead.\tentailment\n",
        "test.tsv": "index\tsentence1\tsentence2\n0\tMangla was summoned.\tShukla is related to Mangla.\n",
    },
    "WNLI": {
        "train.tsv": "index\tsentence1\tsentence2\tlabel\n"
                     "0\tI stuck a pin through a carrot.\tThe carrot had a hole.\t1\n",
        "dev.tsv": "index\tsentence1\tsentence2\tlabel\n0\tThe drain is clogged with hair.\tThe hair is.\t0\n",
        "test.tsv": "index\tsentence1\tsentence2\n0\tMaude and Dora had seen the trains.\tHorses ran away.\n",
    },
}

# (task, split) -> the first example as the Hub's nyu-mll/glue copy has it (hand-written from the snippets above).
EXPECTED_FIRST = {
    ("cola", "train"): {"sentence": "Our friends won't buy this analysis.", "label": 1, "idx": 0},
    ("cola", "test"): {"sentence": "Bill whistled past the house.", "label": -1, "idx": 0},
    ("sst2", "train"): {"sentence": "hide new secretions ", "label": 0, "idx": 0},
    ("mrpc", "train"): {"sentence1": 'He said " no " .', "sentence2": "He said no .", "label": 1, "idx": 0},
    ("mrpc", "test"): {"sentence1": "PCCW 's chief .", "sentence2": "Mike .", "label": -1, "idx": 3},
    ("qqp", "train"): {"question1": "How is the life of a math student?",
                       "question2": "Which level of prepration?", "label": 0, "idx": 0},
    ("qqp", "test"): {"question1": "Why am I mentally very lonely?", "question2": "Find out the meaning of life?",
                      "label": -1, "idx": 0},
    ("mnli", "train"): {"premise": "Conceptually cream skimming has two basic dimensions.",
                        "hypothesis": "Product and geography are what make cream skimming work.", "label": 1,
                        "idx": 0},
    ("mnli", "validation_matched"): {"premise": "The new rights are nice enough",
                                     "hypothesis": "Everyone really likes the newest benefits", "label": 1, "idx": 0},
    ("mnli", "validation_mismatched"): {"premise": "Your contribution helped.",
                                        "hypothesis": "Your contributions were of no help.", "label": 2, "idx": 0},
    ("mnli", "test_mismatched"): {"premise": "What a day.", "hypothesis": "It rained.", "label": -1, "idx": 5},
    ("qnli", "validation"): {"question": "What is the name?", "sentence": "It is a sentence.", "label": 1, "idx": 0},
    ("stsb", "validation"): {"sentence1": "A man dances.", "sentence2": "A man sings.", "label": 0.75, "idx": 0},
    ("stsb", "test"): {"sentence1": "A girl is styling her hair.", "sentence2": "A girl.", "label": -1.0, "idx": 0},
    ("rte", "train"): {"sentence1": "No weapons found.", "sentence2": "Weapons found.", "label": 1, "idx": 0},
    ("rte", "validation"): {"sentence1": "Dana Reeve died.", "sentence2": "Dana Reeve is dead.", "label": 0,
                            "idx": 0},
    ("wnli", "train"): {"sentence1": "I stuck a pin through a carrot.", "sentence2": "The carrot had a hole.",
                        "label": 1, "idx": 0},
}


def write_task(root, directory, files):
    folder = root / directory
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (folder / name).write_text(text, encoding="utf-8")
    return root


@pytest.fixture
def glue_snippets(tmp_path):
    for directory, files in OFFICIAL_SNIPPETS.items():
        write_task(tmp_path, directory, files)
    return tmp_path


@pytest.mark.parametrize("task_split", sorted(EXPECTED_FIRST))
def test_official_layouts_parse_into_the_hub_schema(glue_snippets, task_split):
    name, split = task_split
    data = load_glue_directory(str(glue_snippets), get_glue_task(name))
    assert set(data) == set(get_glue_task(name).splits)
    assert data[split][0] == pytest.approx(EXPECTED_FIRST[task_split])


def test_label_names_follow_the_hub():
    data_features = {name: glue_features(task)["label"] for name, task in GLUE_TASKS.items()}
    assert data_features["mnli"].names == ["entailment", "neutral", "contradiction"]
    assert data_features["wnli"].names == ["not_entailment", "entailment"]
    assert data_features["cola"].names == ["unacceptable", "acceptable"]
    assert data_features["stsb"].dtype == "float32"


@pytest.mark.skipif(not GLUE_DATA.is_dir(), reason="../shared/glue_data is not available")
def test_the_shared_glue_files_have_their_published_sizes():
    sizes = {"cola": (8551, 1043, 1063), "sst2": (67349, 872, 1821), "mrpc": (3667, 408, 1725),
             "stsb": (5749, 1500, 1379), "rte": (2490, 277, 3000), "wnli": (635, 71, 146)}
    for name, expected in sizes.items():
        data = load_glue_directory(str(GLUE_DATA), get_glue_task(name))
        assert (len(data["train"]), len(data["validation"]), len(data["test"])) == expected, name


def test_the_embedded_sst2_sample_is_a_subset_of_the_official_files():
    sample = load_glue_directory(str(REPO_ROOT / "assets" / "glue_sample"), get_glue_task("sst2"))
    assert (len(sample["train"]), len(sample["validation"]), len(sample["test"])) == (10000, 872, 500)
    assert sum(f.stat().st_size for f in (REPO_ROOT / "assets" / "glue_sample").rglob("*")) <= 1_000_000
    if GLUE_DATA.is_dir():
        official = set((GLUE_DATA / "SST-2" / "train.tsv").read_text(encoding="utf-8").splitlines())
        assert set((REPO_ROOT / "assets/glue_sample/SST-2/train.tsv").read_text().splitlines()) <= official


def test_unknown_task_lists_the_known_ones():
    with pytest.raises(ValueError, match="Unknown GLUE task 'sst3'; known tasks: cola, sst2, mrpc, qqp, stsb, mnli"):
        get_glue_task("sst3")
    assert get_glue_task("SST-2").name == "sst2" and get_glue_task("STS-B").name == "stsb"


@pytest.mark.parametrize("directory, file_text, message", [
    ("SST-2", "sentence\tlabel\ngood film\t1\ntoo\tmany\tfields\n",
     r"train.tsv, line 3: expected 2 tab-separated fields \(sentence, label\), found 3"),
    ("SST-2", "text\tlabel\ngood film\t1\n", r"train.tsv, line 1 \(header\): expected the columns \['sentence', "
                                             r"'label'\], missing \['sentence'\]"),
    ("SST-2", "sentence\tlabel\ngood film\t1\nbad film\t2\n",
     r"train.tsv, line 3: label '2' is not one of the labels of task sst2: 0, 1"),
    ("RTE", "index\tsentence1\tsentence2\tlabel\n0\ta\tb\tentailment\n1\ta\tb\tcontradiction\n",
     r"train.tsv, line 3: label 'contradiction' is not one of the labels of task rte: entailment, not_entailment"),
    ("CoLA", "gj04\t1\t\tfine\ngj04\t1\tmissing a field\n",
     r"train.tsv, line 2: expected 4 tab-separated fields \(source, label, original_label, sentence\), found 3"),
    ("STS-B", OFFICIAL_SNIPPETS["STS-B"]["train.tsv"] + "1\tg\tf\ty\t2\tn\tn\ta\tb\t5.5\n",
     r"train.tsv, line 3: the stsb score '5.5' is not a number in \[0, 5\]"),
])
def test_malformed_files_name_file_line_and_expectation(tmp_path, directory, file_text, message):
    write_task(tmp_path, directory, {"train.tsv": file_text})
    task = next(t for t in GLUE_TASKS.values() if t.directory == directory)
    with pytest.raises(GlueFormatError, match=message):
        load_glue_directory(str(tmp_path), task, ["train"])


def test_a_file_that_is_not_utf8_is_named(tmp_path):
    (tmp_path / "RTE").mkdir()
    (tmp_path / "RTE" / "train.tsv").write_bytes(OFFICIAL_SNIPPETS["RTE"]["train.tsv"].encode("utf-8") +
                                                 "1\tSo\u00f1a left.\tNobody left.\tentailment\n".encode("latin-1"))
    with pytest.raises(GlueFormatError, match=r"RTE/train.tsv, line 3: the file is not UTF-8 text \(byte 0xf1 at "
                                              r"offset 86\); GLUE files are UTF-8.*iconv -f latin1 -t utf-8"):
        load_glue_directory(str(tmp_path), get_glue_task("rte"), ["train"])


def test_missing_file_is_named(tmp_path):
    write_task(tmp_path, "RTE", {"train.tsv": OFFICIAL_SNIPPETS["RTE"]["train.tsv"]})
    with pytest.raises(FileNotFoundError, match=r"missing file\(s\) \[.*RTE/dev.tsv'\]"):
        load_glue_directory(str(tmp_path), get_glue_task("rte"), ["train", "validation"])


def test_submission_files_use_the_leaderboard_format(tmp_path):
    rte = write_glue_submission(str(tmp_path), get_glue_task("rte"), "test", [0, 5], [1, 0])
    assert open(rte).read() == "index\tprediction\n0\tnot_entailment\n5\tentailment\n"
    stsb = write_glue_submission(str(tmp_path), get_glue_task("stsb"), "test", [0, 1, 2], [5.31, -0.2, 2.4567])
    assert open(stsb).read() == "index\tprediction\n0\t5.000\n1\t0.000\n2\t2.457\n"
    cola = write_glue_submission(str(tmp_path), get_glue_task("cola"), "test", [3], [1])
    assert cola.endswith("CoLA.tsv") and open(cola).read() == "index\tprediction\n3\t1\n"
    mnli = write_glue_submission(str(tmp_path), get_glue_task("mnli"), "test_mismatched", [0], [2])
    assert mnli.endswith("MNLI-mm.tsv") and open(mnli).read() == "index\tprediction\n0\tcontradiction\n"
