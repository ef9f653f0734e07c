"""Loads saved Hydra checkpoints with `trust_remote_code=True` in an interpreter where this project is not importable.

Started by test_remote_code.py as `python -I -S remote_code_child.py request.json`: `-S` skips site-packages and
their .pth files (the editable install of this project is such a file), and the request lists the plain
site-packages folders to put back, so torch and transformers import but `modeling_hydra` does not. Each load runs
the model on the request's inputs and saves the first output; what ran is reported by module name.
"""

import importlib.util
import json
import sys


def main(request_file):
    with open(request_file, encoding="utf-8") as f:
        request = json.load(f)
    sys.path.extend(request["site_packages"])
    for package in ("modeling_hydra", "configuration_hydra"):
        if importlib.util.find_spec(package) is not None:
            raise RuntimeError(f"{package} is importable in the child: the remote-code test would not be honest")

    import torch
    import transformers

    inputs = torch.load(request["inputs"])
    report = []
    for load in request["loads"]:
        auto_class = getattr(transformers, load["auto_class"])
        model = auto_class.from_pretrained(load["source"], trust_remote_code=True).eval()
        with torch.no_grad():
            torch.save(model(**inputs, return_dict=False)[0], load["output"])
        if load.get("save_to"):
            model.save_pretrained(load["save_to"])
        report.append({"model_class": type(model).__name__, "model_module": type(model).__module__,
                       "config_module": type(model.config).__module__})
    project_modules = sorted(name for name in sys.modules if name.split(".")[0] in ("modeling_hydra",
                                                                                    "configuration_hydra"))
    with open(request["report"], "w", encoding="utf-8") as f:
        json.dump({"loads": report, "project_modules_imported": project_modules}, f)


if __name__ == "__main__":
    main(sys.argv[1])
