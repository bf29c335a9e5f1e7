"""Fine-tuning schemes beside DEFT (federated LoRA, the DLoRA split)."""
