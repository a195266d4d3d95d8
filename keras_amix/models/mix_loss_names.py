"""The Mix Block losses of AMix-I / AMix-C by name (paper Tables 1 and 7).

Plain Python (no Keras), so that the experiment binaries check `--mix_loss`
before Keras loads; `keras_amix.models.AMixSSL` computes the terms.
"""

VARIANTS = ("instance", "cluster")
# The terms a Mix Block loss is made of ("+"-joined), and what each needs.
#   infonce      mixup infoNCE of eq. 4 through the frozen key encoder
#   infonce_pl   ... with the queue's negatives of the two sources' clusters removed
#   infonce_l    ... with the negatives of the two sources' classes removed (labels)
#   bce          the non-parametric BCE of eq. 6
#   ce, pbce     mixup CE / pBCE of a cluster head on ODC pseudo labels ("(C)")
#   ce_l, pbce_l the same with a class head on the data set's labels ("(L)")
MIX_LOSS_TERMS = ("infonce", "infonce_pl", "infonce_l", "bce", "ce", "pbce", "ce_l", "pbce_l")
_NEEDS_CLUSTERS = ("infonce_pl", "ce", "pbce")
_NEEDS_CLASSES = ("infonce_l", "ce_l", "pbce_l")
# Table 1 (CL column) and Table 7 of the paper, one name per row.
PAPER_MIX_LOSSES = {
    "BCE": "bce", "infoNCE": "infonce", "infoNCE+BCE": "infonce+bce",
    "pBCE (C)": "pbce", "CE (C)": "ce", "CE (C)+infoNCE": "ce+infonce",
    "CE (C)+BCE": "ce+bce", "infoNCE (PL)": "infonce_pl", "infoNCE (L)": "infonce_l",
    "CE (L)": "ce_l", "pBCE (L)": "pbce_l",
}
DEFAULT_MIX_LOSS = {"instance": "infonce+bce", "cluster": "ce+bce"}


def parse_mix_loss(mix_loss, variant="cluster", num_classes=None):
    """The terms of a Mix Block loss name, checked: ("ce", "bce") for "ce+bce"."""
    if not isinstance(mix_loss, str) or not mix_loss:
        raise ValueError(f"`mix_loss` must be a '+'-joined string of {MIX_LOSS_TERMS}; "
                         f"received mix_loss={mix_loss!r}.")
    terms = tuple(mix_loss.lower().split("+"))
    unknown = [t for t in terms if t not in MIX_LOSS_TERMS]
    if unknown or len(set(terms)) != len(terms):
        raise ValueError(f"`mix_loss` must join distinct terms of {MIX_LOSS_TERMS} with '+'; "
                         f"received mix_loss={mix_loss!r}.")
    filters = [t for t in terms if t.startswith("infonce")]
    if len(filters) > 1:
        raise ValueError(f"`mix_loss` takes one infoNCE term; received mix_loss={mix_loss!r}.")
    clustered = [t for t in terms if t in _NEEDS_CLUSTERS]
    if clustered and variant != "cluster":
        raise ValueError(f"`mix_loss` terms {clustered} need ODC pseudo labels: "
                         f"variant='cluster' (AMix-C); received variant={variant!r}.")
    labelled = [t for t in terms if t in _NEEDS_CLASSES]
    if labelled and num_classes is None:
        raise ValueError(f"`mix_loss` terms {labelled} read the data set's labels: pass "
                         "`num_classes`; received num_classes=None.")
    return terms
