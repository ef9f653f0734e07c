"""Stand-in for transformers' `tests/utils/test_configuration_utils.py`, which the PyPI sdist does not ship.

`ConfigTester.check_config_arguments_init` passes `config_common_kwargs` to the model's config class and checks that
each value comes back: the arguments of `PreTrainedConfig.__init__`, each set to a value other than its default
(`tests/test_transformers_common.py` checks both against the installed transformers).
"""

config_common_kwargs = {
    "return_dict": False,
    "output_hidden_states": True,
    "output_attentions": True,
    "dtype": "float16",
    "chunk_size_feed_forward": 5,
    "architectures": ["BertModel"],
    "id2label": {0: "label"},
    "label2id": {"label": "0"},
    "problem_type": "regression",
}
