"""Token and cost accounting for the judge, and the budget cap (this run's, or the one it shares with other runs)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..config import JudgeConfig, Price
from ..records import Usage

if TYPE_CHECKING:
    from .shared_budget import SharedBudget


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
    spent_usd: float = 0.0  # this run's
    shared: SharedBudget | None = None  # the account's budget shared with other runs (judge.shared_budget)

    @property
    def price(self) -> Price | None:
        return price_for(self.cfg.prices, self.cfg.model)

    def restore(self, spent_usd: float) -> None:
        """What the run had spent before this invocation (its store's judgments)."""
        self.spent_usd = spent_usd
        if self.shared is not None:
            self.shared.set_spent(spent_usd)

    def charge(self, usage: Usage, batch: bool = False) -> float | None:
        """The cost of one call (None without a price), added to what this run has spent."""
        cost = cost_usd(self.price, usage, self.cfg.batch_discount if batch else None)
        self.spent_usd += cost or 0.0
        if cost and self.shared is not None:
            self.shared.add_spent(cost)
        return cost

    def total_spent(self) -> float:
        """What counts against budget_usd: this run's spend, or that of every run sharing the budget."""
        return self.shared.spent() if self.shared is not None else self.spent_usd

    def exhausted(self) -> bool:
        return self.cfg.budget_usd is not None and self.total_spent() >= self.cfg.budget_usd
