# layers-gptq-3b-g64.gp: Per-layer relative output error, RTN vs GPTQ on the same grid (gptq-3b-g64)
# Drawn from runs/tinystories/results/layers-gptq-3b-g64.csv by nanogptq's figures tool (data in layers-gptq-3b-g64.dat).
# Redraw by hand: cd into this folder, then: gnuplot layers-gptq-3b-g64.gp
if (!exists("outfile")) outfile = "layers-gptq-3b-g64.png"
set terminal pngcairo size 1372,640 font "sans,11" noenhanced
set output outfile
set datafile missing "NaN"
set grid lc rgb "#d8d8d8"
set title "Per-layer relative output error, RTN vs GPTQ on the same grid (gptq-3b-g64)"
set xlabel "quantized linear layer (block index, layer)"
set ylabel "relative output error on calibration inputs (dimensionless, log scale)"
set logscale y
set format y "%.0e"
set xtics rotate by 45 right font ",9"
set xrange [-0.7:23.7]
set bmargin 7
set key top left box opaque
plot "layers-gptq-3b-g64.dat" using 1:2:xtic(4) with linespoints lw 2 pt 5 ps 1.2 lc rgb "#d62728" title "naive (RTN)", \
     "layers-gptq-3b-g64.dat" using 1:3 with linespoints lw 2 pt 7 ps 1.2 lc rgb "#1f77b4" title "GPTQ"
