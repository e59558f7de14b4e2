reset
set title 'fmnist_cr: test accuracy of the best setting per ServerOpt (mean; band: min-max over seeds)' noenhanced
set xlabel 'round'
set ylabel 'test accuracy'
set key bottom right
set grid
set terminal pngcairo size 960,600 font ',11'
set output 'curves-fmnist_cr.png'
plot 'data/curve-fmnist_cr-fedadam.dat' using 1:3:4 with filledcurves fs transparent solid 0.2 noborder lc 1 notitle, '' using 1:2 with lines lw 2 lc 1 title 'fedadam', 'data/curve-fmnist_cr-fedavg.dat' using 1:3:4 with filledcurves fs transparent solid 0.2 noborder lc 2 notitle, '' using 1:2 with lines lw 2 lc 2 title 'fedavg'
set terminal svg size 960,600 dynamic font ',11'
set output 'curves-fmnist_cr.svg'
plot 'data/curve-fmnist_cr-fedadam.dat' using 1:3:4 with filledcurves fs transparent solid 0.2 noborder lc 1 notitle, '' using 1:2 with lines lw 2 lc 1 title 'fedadam', 'data/curve-fmnist_cr-fedavg.dat' using 1:3:4 with filledcurves fs transparent solid 0.2 noborder lc 2 notitle, '' using 1:2 with lines lw 2 lc 2 title 'fedavg'
set output
reset
set title 'fmnist_cr, fedadam: final test accuracy (mean over seeds)' noenhanced
set xlabel 'log10 client lr'
set ylabel 'log10 server lr'
set palette rgbformulae 22,13,-31
unset key
set autoscale xy
set offsets 0.25,0.25,0.25,0.25
set terminal pngcairo size 960,600 font ',11'
set output 'heat-fmnist_cr-fedadam.png'
plot 'data/heat-fmnist_cr-fedadam.dat' using 1:2:(0.25):(0.25):3 with boxxyerror fs solid 1.0 fc palette, '' using 1:2:(sprintf('%.3f',$3)) with labels font ',9'
set terminal svg size 960,600 dynamic font ',11'
set output 'heat-fmnist_cr-fedadam.svg'
plot 'data/heat-fmnist_cr-fedadam.dat' using 1:2:(0.25):(0.25):3 with boxxyerror fs solid 1.0 fc palette, '' using 1:2:(sprintf('%.3f',$3)) with labels font ',9'
set output
reset
set title 'fmnist_cr, fedavg: final test accuracy (mean over seeds)' noenhanced
set xlabel 'log10 client lr'
set ylabel 'log10 server lr'
set palette rgbformulae 22,13,-31
unset key
set autoscale xy
set offsets 0.25,0.25,0.25,0.25
set terminal pngcairo size 960,600 font ',11'
set output 'heat-fmnist_cr-fedavg.png'
plot 'data/heat-fmnist_cr-fedavg.dat' using 1:2:(0.25):(0.25):3 with boxxyerror fs solid 1.0 fc palette, '' using 1:2:(sprintf('%.3f',$3)) with labels font ',9'
set terminal svg size 960,600 dynamic font ',11'
set output 'heat-fmnist_cr-fedavg.svg'
plot 'data/heat-fmnist_cr-fedavg.dat' using 1:2:(0.25):(0.25):3 with boxxyerror fs solid 1.0 fc palette, '' using 1:2:(sprintf('%.3f',$3)) with labels font ',9'
set output
reset
set title 'fmnist_cr: wall time per round, evaluation included (best settings)' noenhanced
set xlabel 'round'
set ylabel 'seconds'
set grid
set yrange [0:*]
set terminal pngcairo size 960,600 font ',11'
set output 'time-fmnist_cr.png'
plot 'data/cost-fmnist_cr-fedadam.dat' using 1:2 with linespoints lc 1 title 'fedadam', 'data/cost-fmnist_cr-fedavg.dat' using 1:2 with linespoints lc 2 title 'fedavg'
set terminal svg size 960,600 dynamic font ',11'
set output 'time-fmnist_cr.svg'
plot 'data/cost-fmnist_cr-fedadam.dat' using 1:2 with linespoints lc 1 title 'fedadam', 'data/cost-fmnist_cr-fedavg.dat' using 1:2 with linespoints lc 2 title 'fedavg'
set output
reset
set title 'fmnist_cr: bytes per round, in + out (best settings)' noenhanced
set xlabel 'round'
set ylabel 'MiB'
set grid
set yrange [0:*]
set terminal pngcairo size 960,600 font ',11'
set output 'bytes-fmnist_cr.png'
plot 'data/cost-fmnist_cr-fedadam.dat' using 1:3 with linespoints lc 1 title 'fedadam', 'data/cost-fmnist_cr-fedavg.dat' using 1:3 with linespoints lc 2 title 'fedavg'
set terminal svg size 960,600 dynamic font ',11'
set output 'bytes-fmnist_cr.svg'
plot 'data/cost-fmnist_cr-fedadam.dat' using 1:3 with linespoints lc 1 title 'fedadam', 'data/cost-fmnist_cr-fedavg.dat' using 1:3 with linespoints lc 2 title 'fedavg'
set output
