"""LLaDA-compatible masked-diffusion LM, the dUltra planner head, tokenizers and loading."""

from transformers import AutoConfig, AutoModel, AutoModelForMaskedLM

from dultra.model.config import LLaDAConfig
from dultra.model.modeling import LLaDAModelLM, SeqLayout

# Registered so `AutoModel.from_pretrained(dir)` of an official LLaDA or dUltra checkpoint
# uses this implementation without `trust_remote_code`.
AutoConfig.register("llada", LLaDAConfig, exist_ok=True)
AutoModel.register(LLaDAConfig, LLaDAModelLM, exist_ok=True)
AutoModelForMaskedLM.register(LLaDAConfig, LLaDAModelLM, exist_ok=True)

__all__ = ["LLaDAConfig", "LLaDAModelLM", "SeqLayout"]
