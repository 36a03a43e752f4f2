"""Data forms accepted by slt_basins.data.as_data, FlatModel's batch calls and output_tensor."""
import numpy as np
import pytest
import torch
from torch import nn
from torch.func import vmap
from torch.utils.data import (BatchSampler, DataLoader, Dataset, IterableDataset, RandomSampler, Subset,
                              SubsetRandomSampler, TensorDataset)

from slt_basins.data import (TARGET_KEYS, TensorData, as_data, as_tensors, batch_targets, describe_batch,
                             model_inputs, target_key)
from slt_basins.functional import FlatModel, output_tensor

N = 10
X = torch.arange(N * 3, dtype=torch.float64).reshape(N, 3)
Y = torch.arange(N)


class DictDataset(Dataset):
    def __len__(self):
        return N

    def __getitem__(self, i):
        return {"x": X[i], "labels": Y[i]}


class Stream(IterableDataset):
    def __iter__(self):
        return iter(zip(X, Y))


class FakeHFDataset:
    """Mimics datasets.Dataset.with_format("torch"): rows and slices as dicts of tensors."""

    def __init__(self, columns, kind="torch"):
        self.columns = columns
        self.format = {"type": kind, "format_kwargs": {}, "columns": None, "output_all_columns": False}

    @property
    def column_names(self):
        return list(self.columns)

    def __len__(self):
        return len(next(iter(self.columns.values())))

    def __getitem__(self, key):
        return {k: v[key] for k, v in self.columns.items()}


def _rows(data):
    """The set of examples, as sorted tuples of the first input column."""
    x = data.tensors[0] if data.kind == "tuple" else data.tensors["x"]
    return sorted(int(v) for v in x[:, 0])


def test_tuple_and_arrays():
    d = as_data((X.numpy(), Y.numpy()), dtype=torch.float32)
    assert (d.n, d.kind, d.loader_batch_size) == (N, "tuple", None)
    assert d.tensors[0].dtype == torch.float32 and d.tensors[1].dtype == torch.int64
    assert torch.equal(d.tensors[0], X.float())
    x, y = as_tensors([X, Y])
    assert torch.equal(x, X) and torch.equal(y, Y)


def test_dict_take_head_and_inputs():
    d = as_data({"x": X, "attention_mask": torch.ones(N, 3, dtype=torch.long), "labels": Y}, dtype=torch.float32)
    assert (d.n, d.kind, target_key(d.batch)) == (N, "dict", "labels")
    assert d.tensors["x"].dtype == torch.float32 and d.tensors["attention_mask"].dtype == torch.long
    b = d.take(torch.tensor([[0, 4], [9, 9]]))
    assert b["x"].shape == (2, 2, 3) and b["labels"].tolist() == [[0, 4], [9, 9]]
    assert d.head(3)["labels"].tolist() == [0, 1, 2]
    args, kwargs = model_inputs(d.batch)
    assert args == () and sorted(kwargs) == ["attention_mask", "x"]
    assert torch.equal(batch_targets(d.batch), Y)
    assert describe_batch(d.head(2)).startswith("x (2, 3) float32")
    with pytest.raises(TypeError, match="as_data"):
        as_tensors({"x": X, "labels": Y})


@pytest.mark.parametrize("bad, msg", [
    ({"x": X, "labels": Y, "label": Y}, "one target key"),
    ({"labels": Y}, "no model inputs"),
    ({"x": X, "labels": Y[:3]}, "different lengths"),
    ((X[:0], Y[:0]), "empty"),
    ({"x": X, "text": ["a"] * N}, "not numeric"),
])
def test_dict_errors(bad, msg):
    with pytest.raises(ValueError, match=msg):
        as_data(bad)


def test_datasets_of_tuples_dicts_and_streams():
    for ds in (TensorDataset(X, Y), Stream()):
        d = as_data(ds)
        assert d.kind == "tuple" and torch.equal(d.tensors[0], X) and torch.equal(d.tensors[1], Y)
    d = as_data(DictDataset())
    assert d.kind == "dict" and torch.equal(d.tensors["x"], X) and torch.equal(d.tensors["labels"], Y)


def test_loader_subset_random_sampler_is_respected_and_deterministic():
    idx = [1, 3, 4, 8]
    loader = DataLoader(TensorDataset(X, Y), batch_size=3, sampler=SubsetRandomSampler(idx))
    torch.manual_seed(123)
    before = torch.get_rng_state()
    d1 = as_data(loader)
    assert torch.equal(torch.get_rng_state(), before)  # the global RNG is untouched
    torch.manual_seed(999)
    d2 = as_data(loader)
    assert d1.n == 4 and d1.loader_batch_size == 3
    assert d1.tensors[1].tolist() == idx  # sorted by dataset index
    assert torch.equal(d1.tensors[0], d2.tensors[0])


def test_loader_subset_collate_drop_last_and_batch_sampler():
    sub = Subset(TensorDataset(X, Y), [0, 2, 5, 7, 9])
    d = as_data(DataLoader(sub, batch_size=2, shuffle=True))
    assert d.n == 5 and _rows(d) == [3 * i for i in (0, 2, 5, 7, 9)]
    d = as_data(DataLoader(TensorDataset(X, Y), batch_size=4, drop_last=True))
    assert (d.n, d.loader_batch_size) == (8, 4) and d.tensors[1].tolist() == list(range(8))
    shuffled = DataLoader(TensorDataset(X, Y), batch_size=4, shuffle=True, drop_last=True)
    torch.manual_seed(1)
    d = as_data(shuffled)
    torch.manual_seed(2)
    assert d.n == 8 and d.tensors[1].tolist() == sorted(set(d.tensors[1].tolist()))
    assert torch.equal(as_data(shuffled).tensors[1], d.tensors[1])  # the same 8 whatever the global RNG
    d = as_data(DataLoader(TensorDataset(X, Y), batch_size=3, sampler=RandomSampler(X, replacement=True)))
    assert d.n == N and d.tensors[1].tolist() == sorted(d.tensors[1].tolist())  # repeats kept
    d = as_data(DataLoader(TensorDataset(X, Y), batch_sampler=[[9, 1, 2], [4]]))
    assert d.tensors[1].tolist() == [1, 2, 4, 9] and d.loader_batch_size == 3

    def collate(items):
        return {"x": torch.stack([2 * x for x, _ in items]), "labels": torch.stack([y for _, y in items])}

    d = as_data(DataLoader(TensorDataset(X, Y), batch_size=3, collate_fn=collate))
    assert d.kind == "dict" and torch.equal(d.tensors["x"], 2 * X)
    d = as_data(DataLoader(TensorDataset(X, Y), batch_size=None))
    assert d.n == N and torch.equal(d.tensors[0], X)


def test_loader_own_generator_is_restored():
    g = torch.Generator().manual_seed(5)
    bs = BatchSampler(RandomSampler(range(N), generator=g), batch_size=4, drop_last=False)
    loader = DataLoader(TensorDataset(X, Y), batch_sampler=bs)
    state = g.get_state()
    d = as_data(loader)
    assert torch.equal(g.get_state(), state)
    assert d.tensors[1].tolist() == list(range(N))  # a shuffled loader over all data: the dataset's order


def test_padding_collator_batches_are_evened_out():
    seqs = [[1, 2], [3, 4, 5, 6], [7], [8, 9, 10]]

    def pad(items):
        length = max(len(s) for s in items)
        ids = torch.tensor([s + [0] * (length - len(s)) for s in items])
        mask = torch.tensor([[1] * len(s) + [0] * (length - len(s)) for s in items])
        return {"input_ids": ids, "attention_mask": mask, "labels": torch.where(mask == 1, ids, -100)}

    d = as_data(DataLoader(seqs, batch_size=2, collate_fn=pad, shuffle=True))
    assert d.tensors["input_ids"].shape == (4, 4)
    assert d.tensors["attention_mask"].sum(1).tolist() == [2, 4, 1, 3]
    assert d.tensors["labels"][0].tolist() == [1, 2, -100, -100]

    def no_mask(items):
        return {"input_ids": pad(items)["input_ids"]}

    with pytest.raises(ValueError, match="different shapes"):
        as_data(DataLoader(seqs, batch_size=2, collate_fn=no_mask))


def test_huggingface_like_dataset():
    cols = {"input_ids": torch.arange(24).reshape(6, 4) % 16, "attention_mask": torch.ones(6, 4, dtype=torch.long)}
    d = as_data(FakeHFDataset(cols))
    assert d.kind == "dict" and d.n == 6 and torch.equal(d.tensors["input_ids"], cols["input_ids"])
    with pytest.raises(TypeError, match="with_format"):
        as_data(FakeHFDataset(cols, kind=None))
    with pytest.raises(ValueError, match="remove_columns"):
        as_data(FakeHFDataset({**cols, "text": ["a"] * 6}))
    d = as_data(DataLoader(FakeHFDataset(cols), batch_size=4, sampler=[5, 0, 2]))
    assert d.n == 3 and torch.equal(d.tensors["input_ids"], cols["input_ids"][[0, 2, 5]])


@pytest.mark.parametrize("bad", [X, 3, "data.csv", (X, Y, Y)])
def test_other_forms_get_a_type_error_listing_the_forms(bad):
    with pytest.raises(TypeError) as e:
        as_data(bad)
    if not isinstance(bad, tuple):
        for form in ("tuple", "dict", "Dataset", "DataLoader", "HuggingFace"):
            assert form in str(e.value)


def test_tensor_data_round_trip():
    d = TensorData((X, Y), loader_batch_size=4)
    assert as_data(d, dtype=torch.float32).loader_batch_size == 4
    assert d.with_targets(Y + 1).tensors[1].tolist() == (Y + 1).tolist()
    assert TensorData({"x": X}).with_targets(Y).tensors["labels"] is Y
    assert "labels" in TARGET_KEYS


class KwModel(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(3, 2)

    def forward(self, x, attention_mask=None):
        return {"logits": self.lin(x) * attention_mask[:, :1], "extra": torch.zeros(1)}


def test_flat_model_calls_dict_batches_under_vmap():
    torch.manual_seed(0)
    model = KwModel().double()
    fm = FlatModel(model)
    assert not hasattr(fm, "to")
    d = as_data({"x": X, "attention_mask": torch.ones(N, 1, dtype=torch.long), "labels": Y})
    out = fm.outputs(fm.w_star, d.batch)
    assert torch.allclose(out, model.lin(X))
    w = fm.w_star + 0.1 * torch.randn(3, fm.d, dtype=torch.float64)
    idx = torch.tensor([[0, 1], [2, 3], [4, 9]])
    got = vmap(fm.outputs)(w, d.take(idx))
    assert got.shape == (3, 2, 2)
    assert torch.allclose(got[2], fm.outputs(w[2], d.take(idx[2])))
    raw = fm.forward(fm.w_star, X, attention_mask=torch.ones(N, 1, dtype=torch.float64))
    assert torch.allclose(output_tensor(raw), out)


def test_output_tensor_forms():
    t = torch.ones(2)
    assert output_tensor(t) is t and output_tensor([t, 0]) is t and output_tensor({"only": t}) is t
    with pytest.raises(TypeError, match="logits"):
        output_tensor({"a": t, "b": t})
    with pytest.raises(TypeError, match="Wrap the model"):
        output_tensor(None)
