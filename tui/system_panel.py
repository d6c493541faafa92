"""The machine under the run: CPU per core and per rank, memory, GPUs, the run's network link."""

from __future__ import annotations

import math

from rich.text import Text

from scalemon.core.units import format_bytes, format_rate

from .glyphs import sparkline
from .panel import Panel
from .view import ViewData


def _num(value: float, fmt: str = ".0f", unit: str = "") -> str:
    return f"{value:{fmt}}{unit}" if value == value else "N/A"


class SystemPanel(Panel):
    TITLE = "System"

    def content(self, view: ViewData) -> Text:
        snapshot = view.summary.system
        if snapshot is None:
            return Text("no system readings (yet)", style=self.style("panel--dim"))
        width = max(10, self.size.width)
        lines = [*self._cpu(snapshot.host, width), self._memory(snapshot.host)]
        lines.append(self._network(snapshot, view.summary.net_bytes_per_step))
        lines += self._gpus(snapshot)
        return Text("\n").join(lines)

    def _cpu(self, host, width: int) -> list[Text]:
        dim = self.style("panel--dim")
        if host.error:
            return [Text(f"cpu N/A: {host.error}", style=dim)]
        cores = host.cpu_percent_per_core
        head = Text()
        head.append("cpu ")
        head.append(f"{_num(host.cpu_percent_total, unit='%')}", style=self.style("panel--em"))
        head.append(f" of {host.cpu_count} cores · load {_num(host.load_1, '.2f')} ", style=dim)
        room = width - head.cell_len
        if cores and room >= 4:
            shown = cores[: room - 1] if len(cores) > room else cores
            head.append(sparkline(shown, top=100.0), style=self._busy_style(host.cpu_percent_total))
            if len(shown) < len(cores):
                head.append("…", style=dim)
        procs = Text()
        launcher = 0.0
        for proc in host.processes:
            if proc.rank is None:
                launcher += proc.cpu_percent if math.isfinite(proc.cpu_percent) else 0.0
                continue
            procs.append(f"r{proc.rank} ", style=dim)
            procs.append(_num(proc.cpu_percent, unit="%"),
                         style=self._busy_style(proc.cpu_percent))
            procs.append(f" {format_bytes(proc.rss_bytes)}  ", style=dim)
        procs.append(f"launcher {launcher:.0f}%", style=dim)
        return [head, procs]

    def _busy_style(self, percent: float):
        if not math.isfinite(percent):
            return self.style("panel--dim")
        return self.style("panel--warn" if percent >= 90 else "panel--good")

    def _memory(self, host) -> Text:
        line = Text()
        line.append("mem ")
        line.append(format_bytes(host.mem_used_bytes), style=self.style("panel--em"))
        share = host.mem_used_bytes / host.mem_total_bytes if host.mem_total_bytes else math.nan
        line.append(f" of {format_bytes(host.mem_total_bytes)} ({_num(share * 100, unit='%')})",
                    style=self.style("panel--dim"))
        if host.swap_used_bytes == host.swap_used_bytes and host.swap_used_bytes > 0:
            line.append(f" · swap {format_bytes(host.swap_used_bytes)}",
                        style=self.style("panel--warn"))
        return line

    def _network(self, snapshot, bytes_per_step: float | None) -> Text:
        dim = self.style("panel--dim")
        run = snapshot.net.run
        if run is None:
            why = snapshot.reason("net") or snapshot.net.error or "run interface unknown"
            return Text(f"net N/A: {why}", style=dim)
        line = Text()
        line.append(f"{run.name} ")
        rates = f"↓{format_rate(run.rx_bytes_per_s * 8)} ↑{format_rate(run.tx_bytes_per_s * 8)}"
        line.append(rates, style=self.style("panel--em"))
        if bytes_per_step is not None:
            line.append(f" · {format_bytes(bytes_per_step)}/step sent", style=dim)
        return line

    def _gpus(self, snapshot) -> list[Text]:
        dim = self.style("panel--dim")
        if not snapshot.gpus:
            missing = [f"{s.vendor}: {s.reason}" for s in snapshot.gpu_vendors if s.reason]
            text = "no GPU" + (f" ({missing[0]})" if missing else "")
            return [Text(text, style=dim)]
        lines = []
        for gpu in snapshot.gpus:
            line = Text()
            if gpu.error:
                lines.append(line.append(f"gpu{gpu.index} {gpu.name}: {gpu.error}",
                                         style=self.style("panel--bad")))
                continue
            line.append(f"gpu{gpu.index} ", style=dim)
            line.append(_num(gpu.utilization_percent, unit="%"),
                        style=self._busy_style(gpu.utilization_percent))
            line.append(f" {format_bytes(gpu.memory_used_bytes)}/"
                        f"{format_bytes(gpu.memory_total_bytes)}"
                        f" {_num(gpu.power_w, unit=' W')} {_num(gpu.temperature_c, unit='°C')}")
            line.append(f" {gpu.name}", style=dim)
            lines.append(line)
        return lines
