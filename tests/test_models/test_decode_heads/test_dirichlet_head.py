"""DirichletHead: the wrapped head's logits, then the Dirichlet's maps."""
import torch
from mmengine.config import ConfigDict

from mmseg.registry import MODELS

from mmseg_uncert.models.segmentors import mmseg_scope
from mmseg_uncert.models.uncertainty import dirichlet_uncertainty

from helpers.distillation import _dirichlet_cfg
from helpers.members import member_model_cfg


def test_dirichlet_head_keeps_the_wrapped_heads_logits_and_appends_its_maps():
    cfg = member_model_cfg(5)
    with mmseg_scope():
        torch.manual_seed(0)
        bare = MODELS.build(ConfigDict(cfg['decode_head']))
        head = MODELS.build(ConfigDict(_dirichlet_cfg()['decode_head']))
    head.head.load_state_dict(bare.state_dict())
    bare.eval(), head.eval()
    feats = [torch.randn(2, 576, 8, 16, generator=torch.Generator().manual_seed(1))]
    with torch.no_grad():
        logits = bare(feats)
        out = head(feats)
    assert out.shape[1] == 5 + 3 and head.out_channels == 8
    assert torch.equal(out[:, :5], logits)
    maps = dirichlet_uncertainty(logits)
    for k, name in enumerate(('total', 'aleatoric', 'epistemic')):
        assert torch.allclose(out[:, 5 + k], maps[name])
