"""A No-U-Turn sampler whose chains advance in lockstep through one batched potential.

Why a sampler of our own beside Pyro's: Pyro's NUTS runs one chain at a time, builds its trees
recursively in Python and calls the potential once per leapfrog step for one chain, so a small
Bayesian net spends most of its time in per-step overhead (``benchmarks/nuts.py`` measures it
against Pyro on the same models). Here C chains share every leapfrog step: one call of a
potential batched over chains, ``potential(z: (C, D)) -> (C,)``, and the tree is built
iteratively (the checkpoint scheme of the iterative NUTS of Phan et al. 2019, NumPyro), so a
chain whose tree has stopped simply waits, masked, until the slowest chain of the iteration is
done. The algorithm is Stan's: multinomial sampling with biased progressive sampling between
subtrees and uniform sampling inside one (Betancourt 2017), the generalised no-U-turn criterion
on every subtree with Stan's extra checks across the join of its two halves (since Stan 2.23;
without them a trajectory can run to the maximum depth at some step sizes), dual-averaging
step-size adaptation to ``target_accept`` and a diagonal mass matrix from Stan's windowed
warm-up (regularised variance estimates), one per chain.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import torch

__all__ = ["NutsDraws", "sample_nuts", "warmup_windows", "potential_and_grad"]

#: the per-draw statistics, named as ArviZ names them in ``sample_stats``
STAT_NAMES = ("lp", "energy", "diverging", "tree_depth", "n_steps", "acceptance_rate",
              "step_size")


@dataclass
class NutsDraws:
    """Draws of :func:`sample_nuts`.

    Attributes:
        z: (C, S, D) unconstrained draws after warm-up.
        stats: per-draw statistics, each (C, S): ``lp`` (−potential), ``energy`` (the
            Hamiltonian of the chosen state), ``diverging``, ``tree_depth``, ``n_steps``
            (leapfrog steps), ``acceptance_rate`` (mean Metropolis acceptance over the tree,
            Stan's accept_stat) and ``step_size``.
        warmup_stats: the same statistics for the warm-up iterations, each (C, W).
        step_size: (C,) adapted step size per chain.
        inverse_mass: (C, D) adapted diagonal inverse mass matrix per chain.
    """

    z: torch.Tensor
    stats: dict[str, torch.Tensor]
    warmup_stats: dict[str, torch.Tensor]
    step_size: torch.Tensor
    inverse_mass: torch.Tensor


def warmup_windows(warmup: int, init_buffer: int = 75, term_buffer: int = 50,
                   base_window: int = 25) -> list[int]:
    """The iterations (0-based) after which Stan's windowed warm-up updates the mass matrix.

    A fast initial buffer adapts only the step size, then slow windows of doubling length
    (the last one stretched to the terminal buffer) each end with a new mass matrix estimate,
    and a terminal buffer adapts the step size to the final matrix. Warm-ups shorter than
    150 iterations use 15% / 75% / 10% of them for the three phases, as Stan does. One
    difference: for 151–199 iterations Stan keeps a first window of 25 and ends with a window of
    a few draws; here the first window is stretched to the terminal buffer instead.
    """
    if warmup < 20:
        return []
    if init_buffer + term_buffer + base_window > warmup:
        init_buffer, term_buffer = int(0.15 * warmup), int(0.1 * warmup)
        base_window = warmup - init_buffer - term_buffer
    ends, start, size = [], init_buffer, base_window
    last = warmup - term_buffer
    while start < last:
        end = start + size
        if end + 2 * size > last:  # the next window would not fit: stretch this one
            end = last
        ends.append(end - 1)
        start, size = end, 2 * size
    return ends


class _DualAveraging:
    """Nesterov dual averaging of log step size (Hoffman & Gelman 2014), one per chain."""

    def __init__(self, step_size: torch.Tensor, target: float, gamma: float = 0.05,
                 t0: float = 10.0, kappa: float = 0.75):
        self.target, self.gamma, self.t0, self.kappa = target, gamma, t0, kappa
        self.restart(step_size)

    def restart(self, step_size: torch.Tensor) -> None:
        """Start again around ``step_size`` (after a new mass matrix)."""
        self.mu = torch.log(10 * step_size)
        self.t = 0
        self.s_bar = torch.zeros_like(step_size)
        self.x_bar = torch.zeros_like(step_size)

    def update(self, accept: torch.Tensor) -> torch.Tensor:
        """One update from the iteration's acceptance statistics; the next step sizes."""
        self.t += 1
        eta = 1.0 / (self.t + self.t0)
        self.s_bar = (1 - eta) * self.s_bar + eta * (self.target - accept)
        x = self.mu - math.sqrt(self.t) / self.gamma * self.s_bar
        weight = self.t ** -self.kappa
        self.x_bar = weight * x + (1 - weight) * self.x_bar
        return torch.exp(x)

    def final(self) -> torch.Tensor:
        """The averaged step sizes, used after warm-up."""
        return torch.exp(self.x_bar)


class _Sampler:
    """The state shared by the steps of one run: potential, step sizes, mass, RNG."""

    def __init__(self, potential, generator: torch.Generator, max_tree_depth: int,
                 max_energy_error: float, value_and_grad=None, fuse: bool = False):
        self.potential = potential
        self.gradient = value_and_grad
        self.fuse = fuse
        self.gen = generator
        self.max_tree_depth = max_tree_depth
        self.max_energy_error = max_energy_error

    # -- the Hamiltonian ---------------------------------------------------------------
    def value_and_grad(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Potential (C,) and its gradient (C, D); a non-finite potential becomes +inf (the
        transition then diverges) and non-finite gradients 0, without a host sync."""
        if self.gradient is not None:
            u, grad = self.gradient(z)
        else:
            u, grad = potential_and_grad(self.potential, z)
        u = torch.nan_to_num(u.detach(), nan=math.inf, neginf=math.inf)
        return u, torch.nan_to_num(grad, nan=0.0, posinf=0.0, neginf=0.0)

    def kinetic(self, r: torch.Tensor) -> torch.Tensor:
        return 0.5 * (r * r * self.inv_mass).sum(-1)

    def momentum(self, like: torch.Tensor) -> torch.Tensor:
        noise = torch.randn(like.shape, generator=self.gen, dtype=like.dtype)
        return noise.to(like.device) / self.inv_mass.sqrt()

    def uniform(self, *shape: int, like: torch.Tensor) -> torch.Tensor:
        return torch.rand(shape, generator=self.gen, dtype=like.dtype).to(like.device)

    def leapfrog(self, point: torch.Tensor, eps: torch.Tensor):
        """One leapfrog step of signed size ``eps`` (C, 1) per chain from ``point`` (C, 3, D)
        = (position, momentum, gradient); the new point and its potential."""
        z, r, grad = point.unbind(1)
        r = r - 0.5 * eps * grad
        z = z + eps * self.inv_mass * r
        u, grad = self.value_and_grad(z)
        r = r - 0.5 * eps * grad
        return torch.stack((z, r, grad), 1), u

    def turning(self, r_a: torch.Tensor, r_b: torch.Tensor, rho: torch.Tensor) -> torch.Tensor:
        """The generalised no-U-turn criterion (Betancourt 2013) between edge momenta, (C, D)
        or (C, blocks, D)."""
        inv_mass = self.inv_mass if rho.dim() == 2 else self.inv_mass.unsqueeze(1)
        rho = rho * inv_mass
        return ((r_a * rho).sum(-1) <= 0) | ((r_b * rho).sum(-1) <= 0)

    def turning_across(self, old_left, old_right, old_rho, outer, inner, sub_rho,
                       backward) -> torch.Tensor:
        """Stan's extra checks (since 2.23) when a new subtree joins the trajectory: the
        backward part with the first leaf of the forward part, and the forward part with the
        last leaf of the backward part, so that a U-turn straddling the join is seen (without
        them a trajectory can run to the maximum depth at some step sizes). ``inner`` /
        ``outer``: the new subtree's momenta next to the old trajectory and at its far end."""
        b = backward.unsqueeze(-1)
        bck_left = torch.where(b, outer, old_left)     # the backward part's far end
        bck_join = torch.where(b, inner, old_right)    # ... and its end at the join
        fwd_join = torch.where(b, old_left, inner)     # the forward part's end at the join
        fwd_right = torch.where(b, old_right, outer)   # ... and its far end
        rho_bck = torch.where(b, sub_rho, old_rho)
        rho_fwd = torch.where(b, old_rho, sub_rho)
        return (self.turning(bck_left, fwd_join, rho_bck + fwd_join)
                | self.turning(bck_join, fwd_right, rho_fwd + bck_join))

    # -- one transition ----------------------------------------------------------------
    def transition(self, point: torch.Tensor, u: torch.Tensor, step_size: torch.Tensor):
        """One NUTS transition of every chain from ``point`` (C, 3, D) = (position, momentum,
        gradient) with potential ``u`` (C,); the chosen point, its potential and statistics."""
        num_chains = point.shape[0]
        r0 = self.momentum(point[:, 0])
        point = torch.stack((point[:, 0], r0, point[:, 2]), 1)
        h0 = u + self.kinetic(r0)
        left = right = point
        prop, prop_scalars = point, torch.stack((u, h0), 1)  # (potential, energy)
        log_w = torch.zeros_like(u)
        rho = r0.clone()
        done = torch.zeros(num_chains, dtype=torch.bool, device=u.device)
        diverging = torch.zeros_like(done)
        depth = torch.zeros(num_chains, dtype=torch.long, device=u.device)
        sum_accept = torch.zeros_like(u)
        n_steps = torch.zeros_like(u)
        for j in range(self.max_tree_depth):
            active = ~done
            if j and not active.any():
                break
            draws = self.uniform(2, num_chains, like=u)
            backward = draws[0] < 0.5
            start = torch.where(backward[:, None, None], left, right)
            eps = torch.where(backward, -step_size, step_size).unsqueeze(-1)
            (edge, inner, sub_prop, sub_scalars, sub_log_w, sub_rho, sub_turn, sub_div,
             sub_acc, sub_n) = self.subtree(start, eps, h0, 2 ** j, active)
            ok = active & ~sub_turn & ~sub_div
            take = ok & (torch.log(draws[1]) < sub_log_w - log_w)
            prop = torch.where(take[:, None, None], sub_prop, prop)
            prop_scalars = torch.where(take[:, None], sub_scalars, prop_scalars)
            extra = self.turning_across(left[:, 1], right[:, 1], rho, edge[:, 1], inner,
                                        sub_rho, backward)
            left = torch.where((ok & backward)[:, None, None], edge, left)
            right = torch.where((ok & ~backward)[:, None, None], edge, right)
            log_w = torch.where(ok, torch.logaddexp(log_w, sub_log_w), log_w)
            rho = torch.where(ok[:, None], rho + sub_rho, rho)
            full_turn = self.turning(left[:, 1], right[:, 1], rho) | extra
            depth = depth + ok  # Stan's treedepth__: the subtrees merged
            sum_accept = sum_accept + active * sub_acc
            n_steps = n_steps + active * sub_n
            diverging = diverging | (active & sub_div)
            done = done | (active & (sub_turn | sub_div | full_turn))
        u, energy = prop_scalars.unbind(1)
        stats = {"lp": -u, "energy": energy, "diverging": diverging, "tree_depth": depth,
                 "n_steps": n_steps, "acceptance_rate": sum_accept / n_steps.clamp_min(1),
                 "step_size": step_size.clone()}
        return prop, u, stats

    def subtree(self, start: torch.Tensor, eps: torch.Tensor, h0: torch.Tensor, leaves: int,
                active: torch.Tensor):
        """Build ``leaves`` leapfrog steps from ``start`` in the direction of ``eps``.

        Returns the subtree's outer edge, the momentum of its first leaf (next to ``start``),
        its proposal (uniform multinomial among its leaves) with its (potential, energy), log
        of its summed weights, its momentum sum, whether it (or any of its sub-subtrees) turned
        or diverged, and the summed acceptance probabilities and leaf count.
        """
        num_chains, _, dim = start.shape
        point = start
        building = active.clone()
        slots = max(1, int(math.log2(leaves)))
        ckpt_r = start.new_zeros(num_chains, slots, dim)
        ckpt_rho = start.new_zeros(num_chains, slots, dim)
        ckpt_prev = start.new_zeros(num_chains, slots, dim)  # the leaf before each stored one
        rho = torch.zeros_like(start[:, 1])
        log_w = torch.full_like(h0, -math.inf)
        prop, prop_scalars = start, torch.stack((h0, h0), 1)
        turning = torch.zeros_like(active)
        diverging = torch.zeros_like(active)
        sum_accept = torch.zeros_like(h0)
        count = torch.zeros_like(h0)
        draws = torch.log(self.uniform(leaves, num_chains, like=h0))
        fused = self.fused_leaf(start, h0)
        merge = None if fused is not None else self.merge_leaf(start, h0)
        for n in range(leaves):
            previous_r = point[:, 1]
            if fused is not None:  # leapfrog step, potential, gradient and merge: one graph
                point, log_w, prop, prop_scalars, rho, diverging, sum_accept, count = fused(
                    point, eps, self.inv_mass, building, h0, draws[n], log_w, prop,
                    prop_scalars, rho, diverging, sum_accept, count)
            else:
                new_point, u = self.leapfrog(point, eps)
                point, log_w, prop, prop_scalars, rho, diverging, sum_accept, count = merge(
                    new_point, u, point, building, h0, self.inv_mass, draws[n], log_w, prop,
                    prop_scalars, rho, diverging, sum_accept, count)
            if n == 0:
                first_r = point[:, 1]
            lo, hi = _checkpoints(n)
            if n % 2 == 0:
                ckpt_r[:, hi] = point[:, 1]
                ckpt_rho[:, hi] = rho
                ckpt_prev[:, hi] = previous_r
            else:  # every sub-subtree closing at this leaf, in one batched check
                # slots lo … hi hold the first leaves of the blocks of 2^(hi−lo+1) … 2 leaves
                # ending here; each block's later half is the next slot's block
                r_start = ckpt_r[:, lo:hi + 1]
                rho_start = ckpt_rho[:, lo:hi + 1]
                block_rho = rho.unsqueeze(1) - rho_start + r_start
                r_end = point[:, 1].unsqueeze(1)
                turned = self.turning(r_start, r_end, block_rho)
                if hi > lo:  # Stan's extra checks across the halves of blocks of ≥ 4 leaves
                    a_first, b_first = r_start[:, :-1], r_start[:, 1:]
                    a_last = ckpt_prev[:, lo + 1:hi + 1]
                    rho_a = rho_start[:, 1:] - b_first - rho_start[:, :-1] + a_first
                    rho_b = block_rho[:, 1:]
                    across = (self.turning(a_first, b_first, rho_a + b_first)
                              | self.turning(a_last, r_end, rho_b + a_last))
                    turned = turned | torch.nn.functional.pad(across, (0, 1))
                turning = turning | (building & turned.any(1))
            building = building & ~turning & ~diverging
            if n + 1 < leaves and not building.any():
                break
        return (point, first_r, prop, prop_scalars, log_w, rho, turning, diverging,
                sum_accept, count)

    def fused_leaf(self, like: torch.Tensor, h0: torch.Tensor):
        """One leaf (leapfrog step with the potential's value and gradient, then
        :func:`_merge_leaf`) as a single frozen TorchScript graph recorded by ``make_fx``, when
        the sampler was asked to ``fuse`` and the potential traces; checked against the
        unfused leaf on random inputs. None otherwise (the leaf then runs in pieces)."""
        if not self.fuse:
            return None
        key = ("fused", tuple(like.shape), like.dtype, like.device)
        cache = self.__dict__.setdefault("_merge_cache", {})
        if key in cache:
            return cache[key]
        cache[key] = None
        max_error = self.max_energy_error

        def leaf(point, eps, inv_mass, building, h0, draw, log_w, prop, prop_scalars, rho,
                 diverging, sum_accept, count):
            z, r, grad = point.unbind(1)
            r = r - 0.5 * eps * grad
            z = z + eps * inv_mass * r
            u, grad = potential_and_grad(self.potential, z)
            u = torch.nan_to_num(u, nan=math.inf, neginf=math.inf)
            grad = torch.nan_to_num(grad, nan=0.0, posinf=0.0, neginf=0.0)
            r = r - 0.5 * eps * grad
            return _merge_leaf(torch.stack((z, r, grad), 1), u, point, building, h0, inv_mass,
                               draw, log_w, prop, prop_scalars, rho, diverging, sum_accept,
                               count, max_energy_error=max_error)

        c = like.shape[0]
        gen = torch.Generator().manual_seed(1)

        def example():
            noise = torch.randn(like.shape, generator=gen, dtype=like.dtype).to(like.device)
            flags = torch.rand(c, generator=gen) < 0.7
            scalars = torch.randn(c, generator=gen, dtype=h0.dtype).to(h0.device)
            return (0.3 * noise, torch.full((c, 1), 0.1, dtype=like.dtype, device=like.device),
                    torch.ones_like(like[:, 0]), flags.to(like.device), scalars + 5.0,
                    scalars - 1.0, scalars, like + noise, torch.stack((scalars, scalars), 1),
                    noise[:, 1], ~flags.to(like.device), scalars.abs(), scalars.abs())

        try:
            from torch.fx.experimental.proxy_tensor import make_fx

            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # TorchScript is deprecated, still works
                args = example()
                graph = make_fx(leaf)(*args)
                traced = torch.jit.freeze(torch.jit.trace(graph, args, check_trace=False).eval())
            for _ in range(2):
                args = example()
                for a, b in zip(traced(*args), leaf(*args), strict=True):
                    close = (torch.equal(a, b) if a.dtype == torch.bool else
                             torch.allclose(a, b, rtol=1e-4, atol=1e-4 * (1 + float(
                                 b.abs().nan_to_num(posinf=0.0).max()))))
                    if not close:
                        return None
        except Exception:  # noqa: BLE001  (any failure: run the leaf in pieces)
            return None
        cache[key] = traced
        return traced

    def merge_leaf(self, like: torch.Tensor, h0: torch.Tensor):
        """:func:`_merge_leaf` for these shapes, traced once into one TorchScript graph (its
        ~20 small ops then cost one call per leaf), or the function itself where tracing is
        unavailable."""
        key = (tuple(like.shape), like.dtype, like.device)
        cache = self.__dict__.setdefault("_merge_cache", {})
        if key not in cache:
            cache[key] = _merge_leaf
            c = like.shape[0]
            flags = torch.ones(c, dtype=torch.bool, device=like.device)
            example = (like, h0, like, flags, h0, torch.ones_like(like[:, 0]), h0, h0, like,
                       torch.stack((h0, h0), 1), like[:, 1], ~flags, h0, h0)
            max_error = self.max_energy_error

            def merge(*args):
                return _merge_leaf(*args, max_energy_error=max_error)

            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # TorchScript is deprecated, still works
                    cache[key] = torch.jit.trace(merge, example, check_trace=False)
            except Exception:  # noqa: BLE001  (without TorchScript: the Python function)
                cache[key] = merge
        return cache[key]

    def find_step_size(self, point: torch.Tensor, u: torch.Tensor, step_size: torch.Tensor):
        """Stan's heuristic: double or halve each chain's step size until one leapfrog step's
        acceptance probability crosses 0.8."""
        direction = None
        pending = torch.ones_like(u, dtype=torch.bool)
        for _ in range(100):
            r = self.momentum(point[:, 0])
            h0 = u + self.kinetic(r)
            start = torch.stack((point[:, 0], r, point[:, 2]), 1)
            new_point, u_new = self.leapfrog(start, step_size.unsqueeze(-1))
            delta = h0 - (u_new + self.kinetic(new_point[:, 1]))
            up = torch.nan_to_num(delta, nan=-math.inf) > math.log(0.8)
            if direction is None:
                direction = up
            pending = pending & (up == direction)
            if not pending.any():
                break
            factor = torch.where(direction, 2.0, 0.5).to(step_size.dtype)
            step_size = torch.where(pending, step_size * factor, step_size)
        return step_size


def _merge_leaf(new_point, u, point, building, h0, inv_mass, draw, log_w, prop, prop_scalars,
                rho, diverging, sum_accept, count, max_energy_error: float = 1000.0):
    """Fold one new leaf into a subtree, for the chains still ``building`` it: its energy
    error, divergence, acceptance probability, weight, the uniform multinomial choice of the
    subtree's proposal (with log-uniform ``draw``) and the momentum sum."""
    keep = building.unsqueeze(-1).unsqueeze(-1)
    point = torch.where(keep, new_point, point)
    r = point[:, 1]
    energy = u + 0.5 * (r * r * inv_mass).sum(-1)
    delta = torch.nan_to_num(energy - h0, nan=math.inf)
    diverging = diverging | (building & (delta > max_energy_error))
    live = building.to(h0.dtype)
    sum_accept = sum_accept + live * torch.exp(-delta).clamp(max=1.0)
    count = count + live
    new_log_w = torch.logaddexp(log_w, -delta)
    take = building & (draw < -delta - new_log_w)
    prop = torch.where(take.unsqueeze(-1).unsqueeze(-1), point, prop)
    prop_scalars = torch.where(take.unsqueeze(-1), torch.stack((u, energy), 1), prop_scalars)
    log_w = torch.where(building, new_log_w, log_w)
    rho = torch.where(building.unsqueeze(-1), rho + r, rho)
    return point, log_w, prop, prop_scalars, rho, diverging, sum_accept, count


def potential_and_grad(potential, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``potential(z)`` (C,) and its gradient with respect to ``z`` (C, D), by autograd."""
    with torch.enable_grad():
        z = z.detach().requires_grad_(True)
        u = potential(z)
        (grad,) = torch.autograd.grad(u.sum(), z)
    return u.detach(), grad


def _checkpoints(n: int) -> tuple[int, int]:
    """The checkpoint slots of leaf ``n`` of a subtree: leaf n (even) stores its momentum and
    running momentum sum in slot ``hi``; leaf n (odd) closes the sub-subtrees starting at the
    leaves stored in slots ``lo … hi``, whose no-U-turn criteria it checks."""
    hi = bin(n >> 1).count("1")
    closed = bin((~n & (n + 1)) - 1).count("1")
    return hi - closed + 1, hi


def sample_nuts(potential, z0: torch.Tensor, *, num_samples: int, warmup: int,
                target_accept: float = 0.8, max_tree_depth: int = 10,
                max_energy_error: float = 1000.0, seed: int = 0, progress=None,
                value_and_grad=None, fuse: bool = False) -> NutsDraws:
    """Run NUTS for C chains at once on a potential batched over chains.

    Args:
        potential: ``U(z: (C, D)) -> (C,)``, the negative log density of each chain's point up
            to a constant; must be differentiable and treat the chains independently.
        z0: (C, D) starting points, one per chain (their potential must be finite).
        num_samples, warmup: draws kept and warm-up iterations, per chain.
        target_accept: the mean acceptance statistic the step size is tuned to.
        max_tree_depth: at most 2^depth − 1 leapfrog steps per transition.
        max_energy_error: an energy error above this marks a divergent transition.
        seed: seeds the momenta and the multinomial choices (on the CPU, so runs repeat on any
            device).
        progress: a callable ``progress(iteration)`` called after every iteration (or None).
        value_and_grad: optionally a faster ``z -> (potential(z), ∇potential(z))`` (e.g. a
            traced one, see :func:`hyperbayes.inference.mcmc.compile_value_and_grad`); by
            default autograd on ``potential``.
        fuse: record each leaf of the trajectory (leapfrog step, potential, gradient and the
            tree bookkeeping) as one TorchScript graph with ``make_fx``, for potentials written
            in plain tensor ops (checked against the unfused leaf; falls back silently).
    """
    if z0.dim() != 2:
        raise ValueError(f"z0 must be (chains, dim); got shape {tuple(z0.shape)}")
    sampler = _Sampler(potential, torch.Generator().manual_seed(seed), max_tree_depth,
                       max_energy_error, value_and_grad, fuse)
    sampler.inv_mass = torch.ones_like(z0)
    u, grad = sampler.value_and_grad(z0)
    point = torch.stack((z0.detach(), torch.zeros_like(grad), grad), 1)
    if not torch.isfinite(u).all():
        bad = (~torch.isfinite(u)).nonzero().squeeze(1).tolist()
        raise ValueError(f"the potential is not finite at the starting point of chains {bad}")
    step_size = sampler.find_step_size(point, u, torch.ones_like(u))
    averaging = _DualAveraging(step_size, target_accept)
    ends = set(warmup_windows(warmup))
    window_start = None if not ends else _window_start(warmup)
    window: list[torch.Tensor] = []
    warm_stats: dict[str, list] = {k: [] for k in STAT_NAMES}
    stats: dict[str, list] = {k: [] for k in STAT_NAMES}
    draws = []
    for it in range(warmup + num_samples):
        point, u, st = sampler.transition(point, u, step_size)
        z = point[:, 0]
        for k in STAT_NAMES:
            (warm_stats if it < warmup else stats)[k].append(st[k])
        if it < warmup:
            step_size = averaging.update(st["acceptance_rate"])
            if window_start is not None and it >= window_start:
                window.append(z)
            if it in ends:
                sampler.inv_mass = _regularized_variance(torch.stack(window, 1))
                window = []
                step_size = sampler.find_step_size(point, u, step_size)
                averaging.restart(step_size)
            if it == warmup - 1:
                step_size = averaging.final()
        else:
            draws.append(z)
        if progress is not None:
            progress(it)
    if not draws:
        raise ValueError("num_samples must be ≥ 1")

    def stack(lists):
        return {k: torch.stack(v, 1) if v else torch.empty(len(z0), 0) for k, v in lists.items()}

    return NutsDraws(torch.stack(draws, 1), stack(stats), stack(warm_stats), step_size,
                     sampler.inv_mass)


def _window_start(warmup: int) -> int:
    """The first iteration of the first slow window (the end of the initial buffer)."""
    init_buffer, term_buffer, base = 75, 50, 25
    if init_buffer + term_buffer + base > warmup:
        init_buffer = int(0.15 * warmup)
    return init_buffer


def _regularized_variance(window: torch.Tensor) -> torch.Tensor:
    """Stan's diagonal metric from a window of draws (C, n, D): the variance shrunk towards
    10⁻³ with weight 5 / (n + 5)."""
    n = window.shape[1]
    var = window.var(1) if n > 1 else torch.ones_like(window[:, 0])
    return (n / (n + 5.0)) * var + 1e-3 * (5.0 / (n + 5.0))
