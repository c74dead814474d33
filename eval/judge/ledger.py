"""Token and cost accounting for the judge, and the budget cap."""

from __future__ import annotations

from dataclasses import dataclass

from ..config import JudgeConfig, Price
from ..records import Usage


def price_for(prices: dict[str, Price], model: str) -> Price | None:
    """Exact model name first, then the longest configured prefix (a dated snapshot under its family)."""
    if model in prices:
        return prices[model]
    matches = [name for name in prices if model.startswith(name)]
    return prices[max(matches, key=len)] if matches else None


def cost_usd(price: Price | None, usage: Usage, batch_discount: float | None = None) -> float | None:
    if price is None:
        return None
    cost = (usage.prompt_tokens * price.input + usage.completion_tokens * price.output) / 1e6
    return cost * (1 - batch_discount) if batch_discount is not None else cost


@dataclass
class Ledger:
    cfg: JudgeConfig
    spent_usd: float = 0.0

    @property
    def price(self) -> Price | None:
        return price_for(self.cfg.prices, self.cfg.model)

    def charge(self, usage: Usage, batch: bool = False) -> float | None:
        """The cost of one call (None without a price), added to what this run has spent."""
        cost = cost_usd(self.price, usage, self.cfg.batch_discount if batch else None)
        self.spent_usd += cost or 0.0
        return cost

    def exhausted(self) -> bool:
        return self.cfg.budget_usd is not None and self.spent_usd >= self.cfg.budget_usd
